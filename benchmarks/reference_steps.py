"""Official-style reference training steps, for timing the project's steps against the way the official
code computes the same thing (benchmarks/bench_gpu.py). Written after the official files named below
(docs/FIDELITY.md records what they do), not from the project: nothing here imports vitpe, so the
architecture and decoder sizes have their own small dataclasses.

- MAE (MAE code, models_mae.py / engine_pretrain.py): timm ``PatchEmbed`` and ``Block``s, the fixed 2D
  sin-cos PE (numpy, frozen parameters), per-sample masking by ``argsort`` of uniform noise, the
  visible-only encoder, a decoder that appends its own mask tokens and unshuffles, MSE on per-patch
  normalised pixels of the removed patches; AdamW (0.9, 0.95) on timm-style decay / no-decay groups;
  the loss scaler's per-step gradient norm and ``loss.item()``.
- MAE+ (AdPE code, model/ad_ape.py, ``--adv_type 0``): the same parts, but the encoder runs on all
  1 + L tokens of each crop, masked positions holding an encoder-width mask token; the crops of an
  image are stacked along the batch; the decoder inserts no mask tokens; PyTorch's AdamW.
- AdPE with absolute PE (``--adv_type 1|2``): δ replaces the mask token (embedding) or shifts the
  coordinates of the masked positions' sin-cos PE (coordinate); the hand-written AdamW of
  optimizer/adv_optimizer.py over every group, the δ group at a negative lr, then the ε-ball projection.
- DeiT-S (MJP code, main.py): timm ``VisionTransformer``, timm Mixup/CutMix with label smoothing,
  soft-target cross-entropy, AdamW (0.9, 0.999) without decay on 1-D parameters, ``cls_token`` and
  ``pos_embed``, gradient clipping at max-norm 5.
- MAE fine-tuning (MAE code, main_finetune.py): timm ``VisionTransformer`` with global pooling (mean
  patch token + fc_norm), drop path, layer-wise lr decay groups (util/lr_decay.py), Mixup, soft-target
  cross-entropy, AdamW; the loss scaler's gradient norm.

Not fixed by the reference documents, so chosen here and worth knowing when reading a ratio: the AdPE
code's training loop (train_epoch.py) is taken to be MAE's (``loss.item()``, the loss scaler's gradient
norm); its encoder re-inserts the mask tokens with MAE's decoder idiom (concatenate, gather with
``ids_restore``); the coordinate PE is blended as ``pe·(1 − m) + pe_δ·m``; the adversarial AdamW walks
the parameters one at a time (no foreach kernels), as a hand-written optimiser of its time does.
Checked against the project's modules on shared weights and the same masks (a scratch check, not part
of the benchmark): MAE, MAE+, AdPE embedding/coordinate losses and DeiT / global-pool logits agree.

Each ``*_step`` builder returns a callable that runs one forward + backward + optimizer step on the
batch it was given and returns the loss (``loss.item()``, a device sync, as the official loops log it).
Precision is the caller's: ``amp_dtype`` autocasts the forward on CUDA (the official MAE code uses fp16
with a GradScaler, the MJP code fp32; a comparison wants both sides in the same precision, and a
GradScaler is a no-op under bf16/fp32). The lr schedule (a few scalar writes per step) is left out.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import Mixup
from timm.layers import PatchEmbed
from timm.loss import SoftTargetCrossEntropy
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

Step = Callable[[], float]


@dataclass(frozen=True)
class ViTArch:
    """Encoder / classifier size (the official builders' keyword arguments)."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class DecoderArch:
    """MAE's decoder: 512 wide, 8 blocks, 16 heads for every model size (models_mae.py)."""

    embed_dim: int = 512
    depth: int = 8
    num_heads: int = 16
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class MixupArgs:
    """The DeiT / MAE fine-tuning Mixup+CutMix settings (official defaults of the MJP train.sh run)."""

    mixup: float = 0.8
    cutmix: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1


_norm_layer = functools.partial(nn.LayerNorm, eps=1e-6)  # as in every official model


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype)


# --- MAE's fixed 2D sin-cos PE (MAE code: util/pos_embed.py) ----------------------------------------

def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # [sin | cos], not interleaved


def sincos_pos_embed(dim: int, grid_size: int, cls_token: bool = True) -> np.ndarray:
    """[1 + g², D] (cls row zeros): first half of the channels the column index, second half the row."""
    grid_h = np.arange(grid_size, dtype=np.float64)
    grid_w = np.arange(grid_size, dtype=np.float64)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # w goes first
    emb = np.concatenate([_sincos_1d(dim // 2, grid[0]), _sincos_1d(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0) if cls_token else emb


def shifted_sincos(dim: int, grid_size: int, shift: torch.Tensor) -> torch.Tensor:
    """AdPE coordinate mode (model/ad_ape.py:66-92): the sin-cos PE of (col + δ0, row + δ1), [L, D],
    recomputed every forward; the integer grid carries no gradient, the shift does."""
    with torch.no_grad():
        idx = torch.arange(grid_size, dtype=torch.float32, device=shift.device)
        row, col = torch.meshgrid(idx, idx, indexing="ij")
        omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32, device=shift.device) / (dim / 4.0))

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([embed(col + shift[0]), embed(row + shift[1])], dim=1)


# --- MAE (MAE code: models_mae.py) ------------------------------------------------------------------

class MaskedAutoencoderViT(nn.Module):
    """MAE with a ViT encoder that sees the visible patches only."""

    def __init__(self, arch: ViTArch, decoder: DecoderArch, norm_pix_loss: bool = True) -> None:
        super().__init__()
        dim, ddim = arch.embed_dim, decoder.embed_dim
        self.patch_embed = PatchEmbed(arch.img_size, arch.patch_size, 3, dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, arch.num_heads, arch.mlp_ratio, qkv_bias=True, norm_layer=_norm_layer)
                                     for _ in range(arch.depth)])
        self.norm = _norm_layer(dim)
        self.decoder_embed = nn.Linear(dim, ddim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, ddim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(ddim, decoder.num_heads, decoder.mlp_ratio, qkv_bias=True,
                                                   norm_layer=_norm_layer) for _ in range(decoder.depth)])
        self.decoder_norm = _norm_layer(ddim)
        self.decoder_pred = nn.Linear(ddim, arch.patch_size ** 2 * 3, bias=True)
        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self) -> None:
        grid = int(self.patch_embed.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed(self.pos_embed.shape[-1], grid)).float()[None])
        self.decoder_pos_embed.data.copy_(
            torch.from_numpy(sincos_pos_embed(self.decoder_pos_embed.shape[-1], grid)).float()[None])
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))  # like a Linear, not the conv default
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        p = self.patch_embed.patch_size[0]
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], 3, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p ** 2 * 3)

    def random_masking(self, x: torch.Tensor, mask_ratio: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(visible tokens, mask [N, L] 1 = removed, ids_restore, ids_keep): per-sample shuffle by noise."""
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        noise = torch.rand(n, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones([n, length], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore, ids_keep

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore, _ = self.random_masking(x, mask_ratio)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1)
        return self.decode_tokens(x)

    def decode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder PE, blocks, norm, pixel predictions; the cls output dropped."""
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


# --- MAE+ and AdPE with absolute PE (AdPE code: model/ad_ape.py) ------------------------------------

class MAEPlusViT(MaskedAutoencoderViT):
    """MAE+: mask tokens of encoder width in the encoder, the full sequence through it; ``adversary``
    ``embedding`` (δ replaces the mask token) or ``coordinate`` (δ shifts the masked positions' PE)."""

    def __init__(self, arch: ViTArch, decoder: DecoderArch, norm_pix_loss: bool = True,
                 adversary: str | None = None) -> None:
        super().__init__(arch, decoder, norm_pix_loss)
        dim = arch.embed_dim
        self.adversary = adversary
        self.grid_size = arch.img_size // arch.patch_size
        # the mask token moves into the encoder (encoder width); the decoder inserts none
        del self.mask_token
        if adversary == "embedding":  # δ takes the mask token's place
            self.adv_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.normal_(self.adv_token, std=0.02)
        else:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.normal_(self.mask_token, std=0.02)
            if adversary == "coordinate":
                self.adv_token = nn.Parameter(torch.zeros(2))
            elif adversary is not None:
                raise ValueError(f"unknown adversary {adversary!r}")

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.patch_embed(x)
        n, length, d = x.shape
        x, mask, ids_restore, _ = self.random_masking(x, mask_ratio)
        fill = self.adv_token if self.adversary == "embedding" else self.mask_token
        mask_tokens = fill.repeat(n, length - x.shape[1], 1).to(x.dtype)
        x = torch.cat([x, mask_tokens], dim=1)
        x = torch.gather(x, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, d))  # back to the full L
        pos = self.pos_embed[:, 1:, :]
        if self.adversary == "coordinate":  # masked positions: PE(coords + δ); visible ones unchanged
            m = mask.unsqueeze(-1)
            pos = pos * (1 - m) + shifted_sincos(d, self.grid_size, self.adv_token).unsqueeze(0) * m
        x = x + pos
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(n, -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        return self.decode_tokens(self.decoder_embed(x))  # already the full sequence: no mask tokens


class AdversarialAdamW(torch.optim.Optimizer):
    """The AdPE optimiser (optimizer/adv_optimizer.py): a hand-written AdamW over every group (decoupled
    decay before the moments, bias-corrected step), one parameter at a time; a group with lr < 0 ascends
    and each of its tensors is then projected onto the ε-ball (``norm`` l2: whole-tensor; linf: clamp)."""

    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0, norm: str = "l2", adv_eps: float = 1.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.norm, self.adv_eps = norm, adv_eps

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> None:
        for group in self.param_groups:
            lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:  # no guard for a missing gradient (as official)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                p.mul_(1 - lr * wd)
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                bias1 = 1 - beta1 ** state["step"]
                bias2 = 1 - beta2 ** state["step"]
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias2)).add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)
                if lr < 0:
                    self._project(p)

    def _project(self, p: torch.Tensor) -> None:
        if self.norm == "l2":
            length = p.norm()
            p.mul_(torch.clamp(length, max=self.adv_eps) / length)
        elif self.norm == "linf":
            p.clamp_(-self.adv_eps, self.adv_eps)


# --- optimiser groups and the loss scaler's gradient norm -------------------------------------------

def add_weight_decay(model: nn.Module, weight_decay: float, skip: Iterable[str] = ()
                     ) -> list[dict]:
    """timm's (0.3/0.4) add_weight_decay: no decay on 1-D parameters, biases and names in ``skip``."""
    skip = set(skip)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # frozen pos_embed tables
        if param.ndim == 1 or name.endswith(".bias") or name in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def param_groups_lrd(model: VisionTransformer, weight_decay: float, layer_decay: float,
                     no_weight_decay: Iterable[str]) -> list[dict]:
    """MAE's util/lr_decay.py: one group per (layer id, decay or not), lr scaled by decay^(top − id);
    cls_token, pos_embed and patch_embed are layer 0, block i layer i + 1, the rest the top layer."""
    num_layers = len(model.blocks) + 1
    skip = set(no_weight_decay)
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim == 1 or name in skip
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = num_layers
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {"lr_scale": layer_decay ** (num_layers - layer),
                           "weight_decay": 0.0 if no_decay else weight_decay, "params": []}
        groups[key]["params"].append(param)
    return list(groups.values())


def get_grad_norm_(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """MAE util/misc.py: the L2 norm of all gradients, one norm kernel per tensor, then their norm."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.norm(torch.stack([torch.norm(g.detach(), 2.0) for g in grads]), 2.0)


def _finite(loss: torch.Tensor) -> float:
    value = loss.item()  # the official loops read the loss every step (a device sync)
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value}, stopping training")
    return value


# --- steps ------------------------------------------------------------------------------------------

def mae_step(model: MaskedAutoencoderViT, optimizer: torch.optim.Optimizer, images: torch.Tensor,
             mask_ratio: float, amp_dtype: torch.dtype | None = None) -> Step:
    """engine_pretrain.py: autocast forward, loss.item(), backward, gradient norm, step, zero_grad."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        with _autocast(images.device, amp_dtype):
            loss, _, _ = model(images, mask_ratio=mask_ratio)
        value = _finite(loss)
        loss.backward()
        get_grad_norm_(params)
        optimizer.step()
        optimizer.zero_grad()
        return value

    return step


def build_mae_step(images: torch.Tensor, arch: ViTArch, decoder: DecoderArch = DecoderArch(), *,
                   mask_ratio: float = 0.75, lr: float = 2.4e-3, weight_decay: float = 0.05,
                   amp_dtype: torch.dtype | None = None) -> Step:
    """MAE pretraining: ``images`` [N, 3, H, W] on the device the model is built on."""
    model = MaskedAutoencoderViT(arch, decoder).to(images.device)
    optimizer = torch.optim.AdamW(add_weight_decay(model, weight_decay), lr=lr, betas=(0.9, 0.95))
    return mae_step(model, optimizer, images, mask_ratio, amp_dtype)


def build_mae_plus_step(crops: torch.Tensor, arch: ViTArch, decoder: DecoderArch = DecoderArch(), *,
                        mask_ratio: float = 0.75, lr: float = 2.4e-3, weight_decay: float = 0.05,
                        adversary: str | None = None, adv_lr: float = 2.4e-3, norm: str = "l2",
                        adv_eps: float = 1.0, amp_dtype: torch.dtype | None = None) -> Step:
    """MAE+ / AdPE-APE pretraining: ``crops`` [N·K, 3, h, w], the K crops of each image stacked along the
    batch (train_epoch.py:37-39); ``arch.img_size`` is the crop size. Without an adversary PyTorch's
    AdamW (``--norm 0``), with one the hand-written adversarial AdamW with δ at lr −adv_lr."""
    model = MAEPlusViT(arch, decoder, adversary=adversary).to(crops.device)
    groups = add_weight_decay(model, weight_decay)
    if adversary is None:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    else:  # config_wd.py: every parameter named "adv" in its own group, lr −adv_lr, wd −adv_wd (0)
        adv = {id(p) for name, p in model.named_parameters() if "adv" in name}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in adv]} for g in groups]
        groups.append({"params": [p for p in model.parameters() if id(p) in adv], "lr": -adv_lr, "weight_decay": 0.0})
        optimizer = AdversarialAdamW(groups, lr=lr, betas=(0.9, 0.95), norm=norm, adv_eps=adv_eps)
    return mae_step(model, optimizer, crops, mask_ratio, amp_dtype)


def deit_model(arch: ViTArch, num_classes: int, drop_path: float = 0.0, global_pool: bool = False
               ) -> VisionTransformer:
    """timm's ViT (vit_small_patch16_224 as the MJP code builds it; global_pool: MAE's models_vit.py)."""
    return VisionTransformer(img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
                             depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=True,
                             num_classes=num_classes, drop_path_rate=drop_path,
                             global_pool="avg" if global_pool else "token", norm_layer=_norm_layer)


def _mixup(args: MixupArgs, num_classes: int) -> Mixup:
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.prob, switch_prob=args.switch_prob,
                 mode="batch", label_smoothing=args.smoothing, num_classes=num_classes)


def build_deit_step(images: torch.Tensor, targets: torch.Tensor, arch: ViTArch, num_classes: int, *,
                    lr: float = 1e-3, weight_decay: float = 0.05, clip_grad: float = 5.0,
                    mixup: MixupArgs = MixupArgs(), amp_dtype: torch.dtype | None = None) -> Step:
    """MJP main.py train_one_epoch: Mixup, forward, soft-target CE, zero_grad, backward, clip, step."""
    model = deit_model(arch, num_classes).to(images.device)
    groups = add_weight_decay(model, weight_decay, skip=model.no_weight_decay())  # cls_token, pos_embed
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    mixup_fn, criterion = _mixup(mixup, num_classes), SoftTargetCrossEntropy()

    def step() -> float:
        samples, soft = mixup_fn(images, targets)
        with _autocast(images.device, amp_dtype):
            loss = criterion(model(samples), soft)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        return _finite(loss)

    return step


def build_mae_finetune_step(images: torch.Tensor, targets: torch.Tensor, arch: ViTArch, num_classes: int, *,
                            lr: float = 2e-3, weight_decay: float = 0.05, layer_decay: float = 0.65,
                            drop_path: float = 0.1, mixup: MixupArgs = MixupArgs(),
                            amp_dtype: torch.dtype | None = None) -> Step:
    """MAE engine_finetune.py: Mixup, autocast forward, soft-target CE, loss.item(), backward, gradient
    norm (loss scaler without clipping), step, zero_grad; layer-decayed AdamW (0.9, 0.999)."""
    model = deit_model(arch, num_classes, drop_path=drop_path, global_pool=True).to(images.device)
    groups = param_groups_lrd(model, weight_decay, layer_decay, model.no_weight_decay())
    for group in groups:  # lr_sched.adjust_learning_rate: lr × lr_scale per group
        group["lr"] = lr * group["lr_scale"]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    mixup_fn, criterion = _mixup(mixup, num_classes), SoftTargetCrossEntropy()
    params = list(model.parameters())

    def step() -> float:
        samples, soft = mixup_fn(images, targets)
        with _autocast(images.device, amp_dtype):
            loss = criterion(model(samples), soft)
        value = _finite(loss)
        loss.backward()
        get_grad_norm_(params)
        optimizer.step()
        optimizer.zero_grad()
        return value

    return step
