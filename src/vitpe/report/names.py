"""Display names of experiments and attacks: the one table every report table and figure reads."""
from __future__ import annotations

EXPERIMENTS = {"deit_s": "DeiT-S", "naive_shuffle": "Naive shuffle", "pixel_shuffle": "Pixel shuffle", "mjp": "MJP",
               "deit_s_normal_init": "DeiT-S, N(0,1) PE init", "mjp_deit_init": "MJP, trunc-normal PE init",
               "mae": "MAE", "mae_plus_abs": "MAE+ (APE)", "adpe_abs_embedding": "AdPE APE, embedding",
               "adpe_abs_coordinate": "AdPE APE, coordinate", "mae_plus_rel": "MAE+ (RPE)",
               "adpe_rel_embedding": "AdPE RPE, embedding", "adpe_rel_coordinate": "AdPE RPE, coordinate",
               "deit_s_april": "DeiT-S, APRIL block", "mjp_april": "MJP, APRIL block"}

ATTACKS = {"inverting_gradients": "IG", "gradvit": "GradViT", "april": "APRIL", "april_adaptive": "APRIL adaptive",
           "pe_gradient": "PE-grad", "pe_gradient_adaptive": "PE-grad adaptive"}

CLIENT_MODES = {"plain": "original", "shuffled": "shuffled"}


def experiment_name(name: str) -> str:
    """An experiment's display name; one without an entry (a sweep such as ``mjp_g30``) spelled out."""
    return EXPERIMENTS.get(name, name.replace("_", " "))


def attack_name(name: str) -> str:
    return ATTACKS.get(name, name)


def client_mode_name(mode: str) -> str:
    return CLIENT_MODES.get(mode, mode)
