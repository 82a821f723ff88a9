"""Masked Jigsaw Puzzle (MJP, CVPR 2023), read top to bottom:

- settings.py: the jigsaw / DAL / unknown-PE settings with the official defaults;
- block_mask.py, jigsaw.py: which patches are shuffled and how (one draw per batch or per sample);
- pos_embed.py: the PE table with a shared unknown row for the shuffled positions (pos_embed ``mjp``);
- dal.py: the dense absolute localization head on the PE table and its loss-weight schedule;
- forward.py: the shuffled forward pass composed from the ViT's generic pieces (training, the
  shuffled evaluations, the attacks' client step);
- training.py: the schedule (when to shuffle) and the loss MJP adds, as the objective the
  supervised trainer asks for.
"""
from vitpe.models.registry import PEFlags, provide_pe

provide_pe("mjp", "vitpe.mjp.pos_embed",
           PEFlags(takes_mask=True, learnable_table=True, options=("init", "weight_decay")))
