"""The RDFER wrapper: video -> KeyExpressionSampler -> backbone -> DualStreamHierarchical -> heads.

>>> model = wrap_with_rdfer("r3d_18", num_classes=7)
>>> out = model(torch.randn(2, 3, 64, 112, 112))
>>> out.logits.shape, out.clip_logits.shape
(torch.Size([2, 7]), torch.Size([2, 4, 7]))
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Union

import torch
import torch.nn as nn
from einops import rearrange

from ..backbones.contract import validate_backbone
from ..losses import agreement_stats
from ..registry import create_backbone
from .dual_stream import DualStreamHierarchical
from .sampler import KeyExpressionSampler, read_frames, uniform_positions

__all__ = ["RDFER", "RDFEROutput", "RDFERPrediction", "wrap_with_rdfer", "DEFAULT_CONFIG"]


class RDFEROutput(NamedTuple):
    """What :class:`RDFER` returns: tensors only, so the model traces and exports."""

    logits: torch.Tensor  # (B, K) video-level prediction
    clip_logits: torch.Tensor  # (B, n_clips, K) per-clip predictions -> agreement
    mu: torch.Tensor  # (B,) window centre as a fraction of the video (0.5 without re-sampling)
    delta: torch.Tensor  # (B,) stride between recognised frames, in loaded-frame units
    features: torch.Tensor  # (B, d) fused dual-stream feature f (before the summary is appended)
    positions: torch.Tensor  # (B, n_clips*clip_len) the frame positions read, in [0, T-1]
    # (B, G, K) the "peak" / "saliency" / "keyinstance" locators' per-glimpse class logits (trained
    # by the loss's multiple-instance term); (B, 0, K) for the other locators and without re-sampling.
    glimpse_logits: torch.Tensor
    # (B, C) the "keyinstance" locator's centres (fractions of the video, trained by the loss's L1
    # key-instance term); (B, 0) otherwise. Optional, so outputs built by users' own models with
    # the seven fields above still work (RDFER and the frame baseline always fill it).
    centres: Optional[torch.Tensor] = None


class RDFERPrediction(NamedTuple):
    """What :meth:`RDFER.predict` returns."""

    probs: torch.Tensor  # (B, K) class probabilities
    agreement: torch.Tensor  # (B,) share of clips voting for the most frequent class
    clip_preds: torch.Tensor  # (B, n_clips) arg-max class of each clip
    positions: torch.Tensor  # (B, n) sampled frame positions in loaded-frame units
    mu: torch.Tensor  # (B,)
    delta: torch.Tensor  # (B,)


DEFAULT_CONFIG: Dict[str, Any] = dict(
    num_glimpses=16,
    n_clips=4,
    clip_len=4,
    detector="tiny_cnn",
    summary_dim=128,
    d_model=512,
    sequence_model="bilstm",
    fusion="sum",
    delta_min_frac=0.25,
    # Issue 13: temporal class activation around its strongest glimpse beat the time-averaged
    # head and the whole-video saliency over 3 seeds (benchmarks/results/resampler.md); a
    # clip-level detector falls back to "mean".
    locator="peak",
    locator_grad=True,
    # Issue 24: "keyinstance" reads n / num_centres frames around each of its centres; the
    # recognizer reads uniformly spread frames during the first locator_warmup_epochs epochs
    # (call model.set_epoch(epoch); `rdfer train` does).
    num_centres=4,
    locator_warmup_epochs=0,
    sampling="linear",
    resample=True,
    summary=True,
    dual_stream=True,
    hierarchical=True,
    # Issue 28: a linear head on the backbone's tokens, averaged, added to both heads' logits --
    # the frame baseline inside the wrapper (True; "video": the video logits only). Not in the
    # paper. It lets small clean sets fit (benchmarks/results/small_data.md) but memorises wrong
    # labels (-6 to -11 validation WAR+UAR at 20-40% noise), so only the `small` recipe turns it on.
    frame_head=False,
)


class RDFER(nn.Module):
    """A backbone wrapped with the key-expression re-sampler, the dual-stream hierarchical
    network and the clip/video heads. Build it with :func:`wrap_with_rdfer`.

    Input ``video``: float ``(B, C, T, H, W)``, any ``T >= 1``. Output: :class:`RDFEROutput`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 7,
        *,
        detector: Optional[nn.Module] = None,
        num_glimpses: int = 16,
        n_clips: int = 4,
        clip_len: int = 4,
        summary_dim: int = 128,
        d_model: int = 512,
        sequence_model: Union[str, Callable[[int], nn.Module]] = "bilstm",
        fusion: str = "sum",
        delta_min_frac: float = 0.25,
        locator: str = "peak",
        locator_grad: bool = True,
        num_centres: int = 4,
        locator_warmup_epochs: int = 0,
        sampling: str = "linear",
        resample: bool = True,
        summary: bool = True,
        dual_stream: bool = True,
        hierarchical: bool = True,
        frame_head: Union[bool, str] = False,
    ) -> None:
        super().__init__()
        if sampling not in ("linear", "nearest"):
            raise ValueError(f"sampling must be 'linear' or 'nearest', got {sampling!r}")
        if n_clips < 1 or clip_len < 1:
            raise ValueError(f"n_clips and clip_len must be >= 1, got {n_clips}, {clip_len}")
        self.num_classes, self.n_clips, self.clip_len = num_classes, n_clips, clip_len
        self.sampling = sampling
        self.backbone = backbone
        self.token_level = backbone.token_level
        n = n_clips * clip_len
        if resample:
            if detector is None:
                raise ValueError("resample=True needs a detector")
            self.sampler: Optional[KeyExpressionSampler] = KeyExpressionSampler(
                detector, n, num_glimpses, summary_dim, summary, delta_min_frac,
                locator=locator, num_classes=num_classes, locator_grad=locator_grad, num_centres=num_centres,
            )
        else:
            self.sampler = None  # no detector, hence no global summary either (Table III)
        self.proj = nn.Linear(backbone.feature_dim, d_model)
        self.temporal = DualStreamHierarchical(
            d_model, n_clips, clip_len, self.token_level, sequence_model, fusion, dual_stream, hierarchical
        )
        self.clip_head = nn.Linear(d_model, num_classes)
        has_summary = self.sampler is not None and self.sampler.summary_head is not None
        self.classifier = nn.Linear(self.temporal.out_dim + (summary_dim if has_summary else 0), num_classes)
        if frame_head not in (True, False, "video"):
            raise ValueError(f"frame_head must be True (added to the clip and video logits), 'video' (video "
                             f"logits only) or False, got {frame_head!r}")
        self.frame_head = nn.Linear(backbone.feature_dim, num_classes) if frame_head else None
        self.frame_head_clips = frame_head is True
        self.config: Dict[str, Any] = {}  # filled by wrap_with_rdfer; saved with checkpoints
        if locator_warmup_epochs < 0:
            raise ValueError(f"locator_warmup_epochs must be >= 0, got {locator_warmup_epochs}")
        self.locator_warmup_epochs = int(locator_warmup_epochs)
        self.reading_uniform = False  # set by set_epoch during the locator warm-up (training only)

    def set_epoch(self, epoch: int) -> None:
        """Tell the model the (0-based) training epoch: during the first ``locator_warmup_epochs``
        the recognizer reads uniformly spread frames while the locator learns where to look."""
        self.reading_uniform = epoch < self.locator_warmup_epochs

    @property
    def num_frames_read(self) -> int:
        return self.n_clips * self.clip_len

    def forward(self, video: torch.Tensor) -> RDFEROutput:
        if video.dim() != 5:
            raise ValueError(f"expected a video batch (B, C, T, H, W), got shape {tuple(video.shape)}")
        b = video.shape[0]
        if self.sampler is not None:
            where = self.sampler(video)
            if self.reading_uniform and self.training:  # locator warm-up: it learns, the recognizer reads uniformly
                uniform = uniform_positions(video.shape[2], self.num_frames_read, b, video.device, video.dtype)
                where = where._replace(positions=uniform.positions, mu=uniform.mu, delta=uniform.delta)
        else:
            where = uniform_positions(video.shape[2], self.num_frames_read, b, video.device, video.dtype)
        frames = read_frames(video, where.positions, self.sampling)  # (B, C, n, H, W)
        if self.token_level == "clip":
            clips = rearrange(frames, "b c (n1 n2) h w -> (b n1) c n2 h w", n1=self.n_clips)
            tokens = rearrange(self.backbone(clips), "(b n1) d -> b n1 d", b=b)
        else:
            tokens = self.backbone(frames)  # (B, n, D)
        f, clip_tokens = self.temporal(self.proj(tokens))
        clip_logits = self.clip_head(clip_tokens)
        z = f if where.summary is None else torch.cat([f, where.summary], dim=-1)
        logits = self.classifier(z)
        if self.frame_head is not None:
            # Per-token logits averaged within each clip and over the video: a residual path
            # from the backbone to the prediction that no sequence model has to learn first.
            frame = rearrange(self.frame_head(tokens), "b (n1 l) k -> b n1 l k", n1=self.n_clips).mean(2)
            if self.frame_head_clips:
                clip_logits = clip_logits + frame
            logits = logits + frame.mean(1)
        glimpse_logits = where.glimpse_logits
        if glimpse_logits is None:
            glimpse_logits = clip_logits.new_zeros(b, 0, self.num_classes)
        centres = where.centres if where.centres is not None else clip_logits.new_zeros(b, 0)
        return RDFEROutput(logits, clip_logits, where.mu, where.delta, f, where.positions, glimpse_logits, centres)

    @torch.no_grad()
    def predict(self, video: torch.Tensor) -> RDFERPrediction:
        """Inference in eval mode: probabilities, agreement and where the model looked."""
        was_training = self.training
        self.eval()
        try:
            out = self(video)
        finally:
            self.train(was_training)
        stats = agreement_stats(out.clip_logits)
        return RDFERPrediction(
            probs=out.logits.softmax(dim=-1),
            agreement=stats.agreement,
            clip_preds=out.clip_logits.argmax(dim=-1),
            positions=out.positions,
            mu=out.mu,
            delta=out.delta,
        )


def wrap_with_rdfer(
    backbone: Union[str, nn.Module],
    num_classes: int = 7,
    *,
    pretrained: Union[bool, str] = False,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
    detector_kwargs: Optional[Dict[str, Any]] = None,
    validate_input: tuple = (3, 4, 64, 64),
    **config: Any,
) -> RDFER:
    """Wrap any video backbone with RDFER.

    Args:
        backbone: a registry name (see :func:`rdfer.list_backbones`) or an ``nn.Module``
            following the backbone contract (use :func:`rdfer.as_backbone` for stock classifiers).
        num_classes: ``K``.
        pretrained: for a registry name: True for the upstream weights, or a local file path.
        backbone_kwargs / detector_kwargs: extra arguments for the registry factories.
        validate_input: ``(C, t, H, W)`` of the dummy clip used to check a user module.
        **config: overrides of :data:`DEFAULT_CONFIG` -- ``num_glimpses=16``, ``n_clips=4``,
            ``clip_len=4``, ``detector="tiny_cnn"`` (a frame-level registry name or a module),
            ``summary_dim=128``, ``d_model=512``, ``sequence_model="bilstm"``, ``fusion="sum"``,
            ``delta_min_frac=0.25``, ``locator="peak"`` (``"keyinstance"``, ``"saliency"``, ``"mean"``, ``"map"``: see
            :mod:`rdfer.model.sampler`; ``"mean"`` when a clip-level detector is given and no
            locator), ``locator_grad=True``, ``num_centres=4`` and ``locator_warmup_epochs=0``
            (``"keyinstance"``; the warm-up for any locator), ``sampling="linear"``, and the Table III switches
            ``resample``, ``summary``, ``dual_stream``, ``hierarchical`` (all True); ``frame_head``
            (a linear head on the backbone's tokens added to both heads' logits, issue 28).

    Returns:
        An :class:`RDFER` module; ``model.config`` records how it was built, so checkpoints
        can rebuild it (for registry names and named sequence models).
    """
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise TypeError(f"wrap_with_rdfer got unknown options {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **config}
    if isinstance(backbone, str):
        backbone_name: Optional[str] = backbone
        backbone_module = create_backbone(backbone, pretrained=pretrained, **(backbone_kwargs or {}))
    elif isinstance(backbone, nn.Module):
        backbone_name = None
        backbone_module = validate_backbone(backbone, validate_input)
    else:
        raise TypeError(f"backbone must be a registry name or an nn.Module, got {type(backbone).__name__}")

    detector = cfg.pop("detector")
    detector_name = detector if isinstance(detector, str) else None
    if cfg["resample"]:
        if isinstance(detector, str):
            detector = create_backbone(detector, **(detector_kwargs or {}))
        elif not isinstance(detector, nn.Module):
            raise TypeError(f"detector must be a registry name or an nn.Module, got {type(detector).__name__}")
        validate_backbone(detector, (3, 2, 32, 32))
        if "locator" not in config and getattr(detector, "token_level", "frame") != "frame":
            cfg["locator"] = "mean"  # the default needs one feature per glimpse; a clip-level detector gives one
    else:
        detector = None

    model = RDFER(backbone_module, num_classes, detector=detector, **cfg)
    model.config = {
        "backbone": backbone_name,
        "num_classes": num_classes,
        "backbone_kwargs": dict(backbone_kwargs or {}),
        "detector_kwargs": dict(detector_kwargs or {}),
        **{k: v for k, v in cfg.items()},
        "detector": detector_name,
    }
    return model
