"""ViT backbone with pluggable position embeddings (learnable, sin-cos, none, MJP's table with a shared
unknown row) and iRPE relative position encoding in every block."""
from vitpe.models.pos_embed import (
    PE_KINDS,
    LearnablePosEmbed,
    NoPosEmbed,
    PositionEmbedding,
    SinCosPosEmbed,
    build_pos_embed,
    sincos_2d_table,
)
from vitpe.models.vit import (
    VisionTransformer,
    build_vit,
    load_timm_state_dict,
    to_timm_state_dict,
    unwrap,
)

__all__ = [
    "PE_KINDS", "PositionEmbedding", "LearnablePosEmbed", "SinCosPosEmbed", "NoPosEmbed",
    "build_pos_embed", "sincos_2d_table", "VisionTransformer", "build_vit",
    "to_timm_state_dict", "load_timm_state_dict", "unwrap",
]
