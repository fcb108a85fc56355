"""The training loop: paper recipe, agreement loss, safe checkpoints, resume, DDP.

``train(TrainConfig(...))`` is what ``rdfer train`` calls. One process, one GPU or many
(``torchrun --nproc_per_node=N -m rdfer train ...``) run the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, WeightedRandomSampler

from ..data.webdataset import batch_videos
from ..losses import HARD, NOISY, AgreementLoss, PairLoss, create_strategy
from ..model.pair import NetworkPair
from ..model.rdfer import RDFER, wrap_with_rdfer
from ..registry import create_model
from .checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_training_state,
    load_weights,
    save_model,
    save_training_checkpoint,
)
from .config import TrainConfig, config_to_yaml, resolve_logit_adjustment
from .datasets import build_datasets, dataset_labels, split_validation
from .distributed import DistInfo, all_agree, barrier, init_distributed, is_main
from .evaluate import evaluate, padding, progress_bar, run_inference, write_confusion
from .metrics import classification_metrics, confusion_matrix, war_uar

__all__ = ["train", "build_model", "make_loader", "batch_transform", "seed_everything"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int) -> RDFER:
    """A preset (``cfg.model``), a registry backbone wrapped with the paper's defaults
    (``cfg.backbone``), or ``rdfer_small`` when neither is given."""
    opts = dict(cfg.model_options)
    if cfg.model == "frame_baseline":  # the baseline takes any backbone: --model frame_baseline --backbone X
        opts.pop("frame_head", None)  # rdfer's head (the small recipe's); the baseline is nothing but that
        if cfg.backbone:
            opts["backbone"] = cfg.backbone
            if cfg.backbone.startswith("timm/"):
                opts["backbone_kwargs"] = {"image_size": cfg.image_size, **(opts.get("backbone_kwargs") or {})}
        if cfg.pretrained:
            opts["pretrained"] = cfg.pretrained
        return create_model("frame_baseline", num_classes=num_classes, **opts)
    if cfg.model and cfg.backbone:
        raise ValueError("give either a preset (--model) or a backbone (--backbone), not both "
                         "(--backbone combines with --model frame_baseline only)")
    if cfg.backbone:
        if cfg.backbone.startswith("timm/"):  # build timm transformers for the frame size trained at
            opts["backbone_kwargs"] = {"image_size": cfg.image_size, **(opts.get("backbone_kwargs") or {})}
        return wrap_with_rdfer(cfg.backbone, num_classes=num_classes, pretrained=cfg.pretrained, **opts)
    if cfg.pretrained:
        opts["pretrained"] = cfg.pretrained
    return create_model(cfg.model or "rdfer_small", num_classes=num_classes, **opts)


def batch_transform(train: bool, augment: bool, scale_jitter: float = 0.0):
    """uint8 (B, C, T, H, W) on any device -> normalised float; when training, augmented
    (``augment``: crop, flip, colour) and zoomed by a random factor within ``scale_jitter``
    (``--scale-jitter``, its own switch: on with ``--no-augment`` too)."""
    from ..data.transforms import VideoBatchTransform

    if not train or (not augment and not scale_jitter):
        return VideoBatchTransform(train=False)
    return VideoBatchTransform(train=True, augment=augment, scale_jitter=scale_jitter)


class _StreamLoader(DataLoader):
    """A DataLoader over :class:`~rdfer.data.WebDatasetVideos` whose length is the exact number of
    batches each rank gets (PyTorch's guess, ``len(dataset) / batch_size``, ignores the padding of
    each worker's run and the split over ranks). Counted once, here: the training loop asks for it
    every step, and a split that cannot be evened out fails before training starts."""

    def __init__(self, dataset, **kwargs) -> None:
        super().__init__(dataset, **kwargs)
        self._batches = dataset.batches_per_rank(self.batch_size, self.num_workers)

    def __len__(self) -> int:
        return self._batches


def make_loader(dataset, batch_size: int, dist_info: DistInfo, shuffle: bool, seed: int, workers: int,
                sampler=None) -> DataLoader:
    from ..data import collate_videos

    if isinstance(dataset, IterableDataset):  # WebDataset shards: the dataset splits itself over ranks and workers
        dataset.shard_over(dist_info.rank, dist_info.world_size)
        return _StreamLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_videos,
                             pin_memory=dist_info.device.type == "cuda", generator=torch.Generator().manual_seed(seed),
                             persistent_workers=False)
    if sampler is None:
        # Always a DistributedSampler (one replica outside torchrun), so 1 and N processes see
        # the same permutation, split into the same global batches.
        sampler = DistributedSampler(dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                     shuffle=shuffle, seed=seed, drop_last=False)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_videos, pin_memory=dist_info.device.type == "cuda",
                      generator=generator, persistent_workers=False)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def amp_autocast(enabled: bool, device: torch.device):
    """The context factory of ``--amp``: bf16 autocast on a GPU, or on a CPU that computes bf16
    natively (2.4x faster R3D-18 training steps on a 2-core AVX512-BF16 Xeon,
    benchmarks/results/m3dfel_step.md); a ValueError on a CPU without it, where bf16 would be
    emulated and slower. ``nullcontext`` when not enabled."""
    if not enabled:
        return nullcontext
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise ValueError("--amp: this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 would be emulated and "
                         "slower than float32; train without --amp")
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _balanced_sampler(dataset, seed: int) -> WeightedRandomSampler:
    labels = dataset_labels(dataset)
    counts = torch.bincount(labels).float()
    weights = (1.0 / counts.clamp(min=1))[labels]
    return WeightedRandomSampler(weights.double(), num_samples=len(labels), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


def _shared_videos(train_set, test_set) -> int:
    """How many test videos are training videos too (same source path); 0 when the datasets do not
    list their paths."""
    paths = [getattr(ds, "samples", None) for ds in (train_set, test_set)]
    if any(p is None for p in paths):
        return 0
    train_paths = {str(p) for p, _ in paths[0]}
    return sum(str(p) in train_paths for p, _ in paths[1])


def _class_counts(dataset, num_classes: int) -> torch.Tensor:
    """Samples per class of the training labels (as given: noisy labels included)."""
    return torch.bincount(dataset_labels(dataset), minlength=num_classes).float()


def _class_weights(dataset, num_classes: int) -> torch.Tensor:
    counts = _class_counts(dataset, num_classes)
    # Inverse frequency, normalised so the weights average to 1 over the samples.
    return counts.sum() / (num_classes * counts.clamp(min=1))


def _class_prior(counts: torch.Tensor) -> torch.Tensor:
    """Class frequencies of the training labels, an empty class given the largest class's: the
    logit adjustment adds ``tau * log(prior)`` in training only, so a tiny prior would leave that
    class's raw logit untrained and high, and the model would predict a class it never saw."""
    prior = counts / counts.sum()
    return torch.where(counts > 0, prior, prior.max())


class _History:
    """Per-epoch metrics in memory, rewritten atomically as JSONL and CSV after each epoch."""

    def __init__(self, run_dir: Path, rows: Optional[List[Dict[str, Any]]] = None) -> None:
        self.run_dir, self.rows = run_dir, list(rows or [])
        self.tb = None
        if is_main():
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None

    def add(self, row: Dict[str, Any]) -> None:
        self.rows.append(row)
        if not is_main():
            return
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))
        cols = sorted({k for r in self.rows for k in r if not isinstance(r[k], (dict, list))})
        lines = [",".join(cols)] + [",".join("" if r.get(c) is None else str(r.get(c)) for c in cols) for r in self.rows]
        atomic_write_text(self.run_dir / "metrics.csv", "\n".join(lines) + "\n")
        atomic_write_text(self.run_dir / "train.log", "".join(epoch_line(r) + "\n" for r in self.rows))
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _describe(paths: Sequence[str], limit: int = 8) -> str:
    paths = list(paths)
    return ", ".join(paths[:limit]) + (f" ... ({len(paths)} in all)" if len(paths) > limit else "")


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train and evaluate one run; returns the results (also written to ``cfg.out``).

    Writes ``config.yaml``, ``metrics.{jsonl,csv}``, ``checkpoints/epoch_NNNN/``,
    ``model.safetensors`` (last epoch), ``results.json``, ``confusion.{csv,png}``,
    ``train_flags.csv`` and ``bad_samples.txt`` (when any sample was unreadable).

    The run folder is locked for the whole run (a second writer is refused); a fresh run into a
    folder that holds a run is refused unless ``cfg.overwrite`` (the old run is moved aside),
    and ``cfg.resume`` must not change what the run computes (see :mod:`rdfer.engine.rundir`).
    """
    dist_info = init_distributed(cfg.device)
    _check_options(cfg)
    existed = Path(cfg.out).exists()
    lock = _claim_run_folder(cfg)
    try:
        return _train(cfg, dist_info)
    except BaseException:
        if lock is not None:  # failed before its first checkpoint: leave the folder as it was
            from .rundir import undo_failed_start

            undo_failed_start(lock.start)
        raise
    finally:
        if lock is not None:
            lock.release()
            if not existed and not any(Path(cfg.out).iterdir()):
                Path(cfg.out).rmdir()  # failed before writing anything: leave no empty folder behind


def _check_options(cfg: TrainConfig) -> None:
    """Option errors that need no data or model, before anything is written: every option in its
    range (:meth:`TrainConfig.validate_for_training`: a config changed after it was built is
    checked again here), the model and backbone names, an --out that can be written."""
    cfg.validate_for_training()
    if cfg.decode_on_device and cfg.dataset != "webdataset":
        raise ValueError(f"--decode-on-device applies to webdataset shards (JPEG frames); {cfg.dataset} data is "
                         "decoded by the loader workers")
    try:
        str(cfg.out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"--out {cfg.out!r} is not valid UTF-8 (TensorBoard and the YAML config cannot "
                         f"store it); choose a folder name in UTF-8") from None
    _check_writable(Path(cfg.out))


def _check_writable(out: Path) -> None:
    """--out, or the folder it would be created in, must be writable by this process."""
    import errno
    import os

    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or os.access(existing, os.W_OK | os.X_OK):
        return  # not a folder: creating --out gives its own clear error
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "is on a read-only file system" if read_only else "is not writable by this user (permission denied)"
    code = errno.EROFS if read_only else errno.EACCES
    where = "" if existing == out else f" ({existing}, where it would be created, {why})"
    raise OSError(code, f"--out {out} cannot be written{where or ': it ' + why}; choose another --out")


def _claim_run_folder(cfg: TrainConfig):
    """Lock ``cfg.out`` and check it may hold this run (main process); every process learns
    whether that worked, so none waits on a peer that stopped."""
    from .rundir import RunFolderError, RunLock, prepare_run_folder

    lock, error = None, None
    if is_main():
        lock = RunLock(cfg.out)
        try:
            lock.acquire()
            lock.start = prepare_run_folder(cfg)
        except BaseException as exc:
            lock.release()
            lock, error = None, exc
    if not all_agree(error is None):
        raise error if error is not None else RunFolderError(f"the main process could not use {cfg.out}")
    return lock


def _train(cfg: TrainConfig, dist_info: DistInfo) -> Dict[str, Any]:
    world = dist_info.world_size
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    if cfg.balanced_sampler and world > 1:
        raise ValueError("--balanced-sampler is single-process only; use --class-weighted under torchrun")
    if cfg.balanced_sampler and cfg.dataset == "webdataset":
        raise ValueError("--balanced-sampler draws videos by index, which a stream of shards cannot do; use "
                         "--class-weighted with webdataset")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir = Path(cfg.out)
    device = dist_info.device
    autocast = amp_autocast(cfg.amp, device)  # refused before any data is read where it cannot help

    # Data first: a wrong root or a broken CSV fails here, before any model is built.
    train_full, test_set, class_names = build_datasets(cfg)
    num_classes = len(class_names)
    if cfg.dataset in ("packed", "webdataset"):  # a pack stores its frames at one size, whatever --image-size says:
        cfg.image_size = int(train_full.image_size)  # the model, config.yaml and the card record that size
    # How the training faces are framed: stored in the model, so `rdfer predict` crops raw video the same way.
    from ..inference.faces import dataset_framing

    framing, notice = (None, "") if cfg.dataset == "synthetic" else dataset_framing(train_full)
    shared = _shared_videos(train_full, test_set) if cfg.dataset != "synthetic" else 0  # names, not files
    if shared and is_main():
        print(f"rdfer: warning: {shared} of the {len(test_set)} test videos are training videos too (e.g. the same "
              f"file as --train and --test): the test scores measure memory, not recognition of new videos",
              file=sys.stderr, flush=True)
    identity = training_data_identity(cfg, train_full, class_names)
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    state = load_training_state(ckpt) if ckpt is not None else None
    if notice and is_main() and not state:
        print(f"training faces: {notice}; rdfer predict crops raw videos the same way (--crop-margin overrides)",
              flush=True)
    if state is not None:  # a resumed run must see the data it started with
        _check_same_training_data(run_dir, ckpt, state, identity)
    train_set, val_set = (split_validation(train_full, cfg.val_fraction, cfg.seed) if cfg.val_fraction > 0
                          else (train_full, None))

    seed_everything(cfg.seed)
    networks = create_strategy(cfg.strategy, **cfg.strategy_options).networks
    try:
        model = build_model(cfg, num_classes)
        if networks == 2:  # a two-network rule: a second network of the same kind, its own initial weights
            model = NetworkPair(model, build_model(cfg, num_classes))
        model = model.to(device)
    except TypeError as err:  # an option the model does not take: the user's --model-option
        if "unknown options" not in str(err) and "unexpected keyword" not in str(err):
            raise
        raise ValueError(f"--model-option: {err}") from None
    class_counts = _class_counts(train_set, num_classes)  # read once for the tau and the notices
    tau = resolve_logit_adjustment(cfg.logit_adjustment, class_counts.tolist())
    empty = [class_names[k] for k in (class_counts == 0).nonzero().flatten().tolist()]
    if empty and is_main() and not state:
        print(f"rdfer: warning: {len(empty)} class(es) have no training video: {', '.join(empty)}; the model cannot "
              f"learn them (give --classes with the classes you have)", file=sys.stderr, flush=True)
    if cfg.logit_adjustment == "auto" and tau and is_main() and not state:
        present = class_counts[class_counts > 0]
        ratio = f"{float(present.max() / present.min()):.1f}x the smallest" if not empty else "some classes empty"
        print(f"imbalanced training labels (largest class {ratio}): logit adjustment on, tau {tau:g} "
              f"(--logit-adjustment 0 turns it off)", flush=True)
    criterion = (PairLoss if networks == 2 else AgreementLoss)(
        num_samples=len(train_full), mixup=cfg.mixup, t_hard=cfg.t_hard, t_noisy=cfg.t_noisy, lambda_hard=cfg.lambda_hard,
        lambda_noisy=cfg.lambda_noisy, label_smoothing=cfg.label_smoothing, aux_weight=cfg.aux_weight,
        scope=cfg.loss_scope, strategy=cfg.strategy, strategy_options=cfg.strategy_options, num_classes=num_classes,
        start_epoch=cfg.effective_start_epoch(),
        noisy_requires_mismatch=cfg.noisy_requires_mismatch, agree_min=cfg.agree_min,
        memory_momentum=cfg.memory_momentum, gce_q=cfg.gce_q, noisy_max=cfg.noisy_max,
        noisy_class_guard=cfg.noisy_class_guard,
        logit_adjustment=tau,
        class_prior=_class_prior(class_counts) if tau else None,
        class_weight=_class_weights(train_set, num_classes) if cfg.class_weighted else None,
    ).to(device)

    from .model_card import RULES_WITH_START_EPOCH

    if cfg.strategy in RULES_WITH_START_EPOCH and criterion.start_epoch >= cfg.epochs and is_main() and not state:
        print(f"rdfer: warning: the {cfg.strategy} rule starts after epoch {criterion.start_epoch} (--warmup-epochs "
              f"{cfg.warmup_epochs}{'' if cfg.start_epoch is None else f', --start-epoch {cfg.start_epoch}'}) but "
              f"the run has {cfg.epochs} epochs: it never acts, the run is plain cross-entropy; lower "
              f"--warmup-epochs or --start-epoch", file=sys.stderr, flush=True)
    local_batch = cfg.batch_size // world
    sampler = _balanced_sampler(train_set, cfg.seed) if cfg.balanced_sampler else None
    train_loader = make_loader(train_set, local_batch, dist_info, True, cfg.seed, cfg.workers, sampler)
    test_loader = make_loader(test_set, local_batch, dist_info, False, cfg.seed, cfg.workers)
    val_loader = make_loader(val_set, local_batch, dist_info, False, cfg.seed, cfg.workers) if val_set is not None else None
    train_tf, eval_tf = batch_transform(True, cfg.augment, cfg.scale_jitter), batch_transform(False, cfg.augment)

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    updates_per_epoch = max(1, math.ceil(len(train_loader) / cfg.accum_steps))
    from timm.scheduler import CosineLRScheduler

    scheduler = CosineLRScheduler(
        optimizer, t_initial=max(1, cfg.epochs * updates_per_epoch), lr_min=cfg.min_lr,
        warmup_t=cfg.warmup_epochs * updates_per_epoch, warmup_lr_init=cfg.min_lr, t_in_epochs=False,
    )

    start_epoch, num_updates, history_rows = 0, 0, []
    best_val: Optional[float] = None
    if cfg.resume:
        if ckpt is not None:
            load_weights(model, ckpt / "model.safetensors", map_location=device)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            criterion.load_state_dict(state["criterion"])
            start_epoch, num_updates = int(state["epoch"]), int(state["num_updates"])
            history_rows, best_val = list(state["history"]), state.get("best_val")
            if is_main():
                print(f"resuming {run_dir} after epoch {start_epoch}")
        elif is_main():
            print(f"--resume: no checkpoint in {run_dir}/checkpoints, starting from scratch")

    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        atomic_write_text(run_dir / TRAIN_DATA_FILE, json.dumps(identity) + "\n")
    history = _History(run_dir, history_rows)
    # Stored in every saved model, so inference loads videos the way training did.
    meta = {"rdfer_data": json.dumps({"num_frames": cfg.num_frames, "image_size": cfg.image_size,
                                      **({"face_framing": framing.to_dict()} if framing is not None else {}),
                                      "classes": class_names, "dataset": cfg.dataset})}

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=cfg.aux_weight == 0)
    bad_paths: set = set()
    guard = _DivergenceGuard(cfg)

    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
    for epoch in range(start_epoch, last_epoch):
        # Re-seeding at every epoch boundary makes a resumed run repeat the uninterrupted one.
        seed_everything(cfg.seed * 1_000_003 + epoch)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(cfg.seed + epoch)
        if isinstance(train_loader.dataset, IterableDataset):  # WebDataset: this epoch's shard order and shuffle
            train_loader.dataset.set_epoch(epoch)
        if hasattr(model, "set_epoch"):  # the locator warm-up (issue 24)
            model.set_epoch(epoch)
        flags_in_effect = criterion.flags.clone() if (criterion.active and criterion.scope == "epoch") else None
        stats = _train_one_epoch(net, model, criterion, optimizer, scheduler, train_loader, train_tf, device,
                                 cfg, epoch, num_updates, autocast, bad_paths, num_classes, guard,
                                 estimate_epochs=last_epoch - epoch if epoch == start_epoch else 0)
        guard.check_epoch_end(model, epoch)  # the weights this epoch leaves are checked before they are saved
        num_updates = stats.pop("num_updates")
        batch_flags = (stats.pop("batch_hard"), stats.pop("batch_noisy"))
        criterion.step_epoch()
        row: Dict[str, Any] = {"epoch": epoch + 1, **stats, "lr": optimizer.param_groups[0]["lr"]}
        # Flags that weighted this epoch's losses.
        if flags_in_effect is not None:
            row["flagged_hard"] = int((flags_in_effect == HARD).sum())
            row["flagged_noisy"] = int((flags_in_effect == NOISY).sum())
        else:
            row["flagged_hard"], row["flagged_noisy"] = batch_flags
        if val_loader is not None:
            val = evaluate(model, val_loader, device, num_classes, class_names, eval_tf)
            row["val_war"], row["val_uar"] = val["war"], val["uar"]
            if is_main() and (best_val is None or val["war"] > best_val):
                best_val = val["war"]
                guard.require_finite_weights(model, epoch, collective=False)
                save_model(model, run_dir / "best_val" / "model.safetensors", {**meta, "epoch": str(epoch + 1)})
        if cfg.eval_test_every and (epoch + 1) % cfg.eval_test_every == 0:
            mon = evaluate(model, test_loader, device, num_classes, class_names, eval_tf)
            row["test_monitor_war"], row["test_monitor_uar"] = mon["war"], mon["uar"]
        history.add(row)
        if is_main():
            guard.require_finite_weights(model, epoch, collective=False)
            save_training_checkpoint(run_dir, epoch + 1, model, {
                "epoch": epoch + 1, "num_updates": num_updates, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "criterion": criterion.state_dict(),
                "history": history.rows, "best_val": best_val, "train_data_sha256": identity["sha256"],
            }, keep=cfg.keep_checkpoints, metadata=meta)
            if cfg.verbose:  # quiet by default: the same line is in train.log
                print(epoch_line(row), flush=True)
        barrier()
    history.close()
    if last_epoch < cfg.epochs:
        if is_main():
            print(f"stopped after epoch {last_epoch} of {cfg.epochs} (--stop-after); continue with --resume")
        return {"run": str(run_dir), "stopped_after_epoch": last_epoch}
    results = _finish(cfg, model, criterion, train_full, test_loader, val_loader, eval_tf, device,
                      num_classes, class_names, history.rows, bad_paths, run_dir, best_val, meta)
    barrier()
    return results


#: In the run folder: the training set's class list and (path, label) of every video, in index
#: order, with their sha256; a --resume on other data is refused naming the differences.
TRAIN_DATA_FILE = "train_data.json"


def training_data_identity(cfg: TrainConfig, dataset, classes: Sequence[str]) -> Dict[str, Any]:
    """What a run trains on: the classes and every training video's ``[path, label]`` in index
    order (the loss memory is kept by index, so the order counts too), their ``sha256``, and for
    the synthetic set the generator's parameters."""
    samples = [[str(path), int(label)] for path, label in getattr(dataset, "samples", None) or
               ((f"#{i}", y) for i, y in enumerate(dataset_labels(dataset).tolist()))]
    identity: Dict[str, Any] = {"dataset": cfg.dataset, "classes": list(classes), "num_videos": len(samples)}
    if cfg.dataset == "synthetic":
        identity["generator"] = {k: getattr(cfg, k) for k in ("synthetic_train", "noise_rate", "noise",
                                                              "synthetic_distribution", "synthetic_static", "seed",
                                                              "num_frames", "image_size") if hasattr(cfg, k)}
    text = json.dumps({**identity, "samples": samples}, sort_keys=True)
    return {**identity, "sha256": hashlib.sha256(text.encode()).hexdigest(), "samples": samples}


def _data_changes(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """What differs between two :func:`training_data_identity` records, in words (5 paths at most each)."""
    changes: List[str] = []
    if old.get("classes") != new["classes"]:
        changes.append(f"classes: {old.get('classes')} in the run, {new['classes']} now")
    if old.get("generator") != new.get("generator"):
        changes.append(f"generator: {old.get('generator')} in the run, {new.get('generator')} now")
    before = {p: y for p, y in old.get("samples", [])}
    after = {p: y for p, y in new["samples"]}

    def name(classes: Sequence[str], y: int) -> str:
        return str(classes[y]) if 0 <= y < len(classes) else str(y)

    relabelled = [p for p in after if p in before and before[p] != after[p]]
    if relabelled:
        shown = ", ".join(f"{p}: {name(old.get('classes') or [], before[p])} -> {name(new['classes'], after[p])}"
                          for p in relabelled[:5])
        changes.append(f"labels of {len(relabelled)} video(s) changed ({shown}{' ...' if len(relabelled) > 5 else ''})")
    added = [p for p in after if p not in before]
    removed = [p for p in before if p not in after]
    if added:
        changes.append(f"{len(added)} video(s) added ({_describe(added, 5)})")
    if removed:
        changes.append(f"{len(removed)} video(s) removed ({_describe(removed, 5)})")
    if not changes and [p for p, _ in old.get("samples", [])] != [p for p, _ in new["samples"]]:
        changes.append("the order of the videos changed (the per-video loss memory is kept by position)")
    return changes or ["the list of videos differs (e.g. a row listed twice)"]


def _check_same_training_data(run_dir: Path, ckpt: Path, state: Dict[str, Any], identity: Dict[str, Any]) -> None:
    """Refuse a --resume whose training data differs from the data the checkpoint was trained on."""
    from .rundir import RunFolderError

    stored: Optional[Dict[str, Any]] = None
    try:
        stored = json.loads((run_dir / TRAIN_DATA_FILE).read_text())
    except (OSError, ValueError):
        stored = None  # a run from before rdfer stored it
    sha = state.get("train_data_sha256") or (stored or {}).get("sha256")
    advice = (". Its per-video loss memory and learning-rate schedule belong to the data it started with: restore "
              "that data, or start a new run on this data (another --out, or --overwrite)")
    if sha is not None and sha != identity["sha256"]:
        changes = (_data_changes(stored, identity) if stored and stored.get("sha256") == sha else
                   [f"fingerprint {sha[:12]} in the run, {identity['sha256'][:12]} now"])
        raise RunFolderError(f"--resume: the training data of the run in {run_dir} has changed since it started: "
                             + "; ".join(changes) + advice)
    memory = (state.get("criterion") or {}).get("mem_loss")
    if memory is not None and memory.numel() != identity["num_videos"]:  # runs without a fingerprint
        raise RunFolderError(f"--resume: {ckpt} was trained on {memory.numel()} videos but the training set now has "
                             f"{identity['num_videos']}" + advice)


def epoch_line(row: Dict[str, Any]) -> str:
    """One ``key=value`` line per epoch, as in ``train.log``."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


# Steps timed for the run-time estimate; the first step (allocations, thread pools) is not timed.
_ESTIMATE_STEPS = 3
_ESTIMATE_MIN_SECONDS = 60.0  # shorter runs print no estimate


def time_estimate(epochs: int, steps_per_epoch: int, seconds_per_step: float) -> str:
    """The one-line run-time estimate printed after the first steps of a run."""
    total = epochs * steps_per_epoch * seconds_per_step
    human = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
    text = (f"estimated training time: {epochs} epochs x {steps_per_epoch} steps x {seconds_per_step:.2f} s/step "
            f"= {human} (evaluation not included)")
    if total >= 1800:
        text += ("; a long run: fewer --epochs, --num-frames or --image-size shorten it, and --stop-after N with "
                 "--resume splits it")
    return text


def _first_non_finite(module: nn.Module, grads: bool = False) -> Optional[str]:
    """The name of the first parameter or floating buffer (its gradient with ``grads``) holding a
    nan or inf, or None; one device synchronisation when everything is finite."""
    named = ([(n, p.grad) for n, p in module.named_parameters() if p.grad is not None] if grads else
             [(n, p) for n, p in module.named_parameters()] +
             [(n, b) for n, b in module.named_buffers() if b.is_floating_point()])
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named])
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0, 0])][0]


class _DivergenceGuard:
    """Stops a run whose loss, gradients or weights stop being finite, before such weights are
    saved or reported (docs/reliability.md). Counts non-finite steps in a row across epochs
    (``cfg.max_bad_steps`` are skipped, then the run stops) and keeps the last batch that gave one,
    to probe the weights at the end of an epoch."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.consecutive = 0
        self.last_bad: Optional[tuple] = None  # (video, target, paths) of the latest non-finite step

    def kept(self, epoch: int) -> str:
        """What is left of the run, truthfully."""
        last = latest_checkpoint(self.cfg.out)
        advice = ("a --resume with the same options repeats these steps: start a new run (another --out, or "
                  "--overwrite) with a lower --lr or a --grad-clip")
        if last is None:
            return f"no checkpoint was written yet (it stopped in epoch {epoch + 1}); {advice}"
        return f"nothing of epoch {epoch + 1} was saved; the last checkpoint, {last}, is intact; {advice}"

    def bad_step(self, what: str, value: str, epoch: int, step: int, paths: Sequence[str], video, target) -> None:
        """A skipped step: warn, or stop after ``max_bad_steps`` in a row."""
        self.consecutive += 1
        self.last_bad = (video.detach(), target.detach(), list(paths))
        msg = (f"non-finite {what} ({value} here; in at least one process) at epoch {epoch + 1}, step {step + 1}; the "
               f"step was skipped. Samples in the batch: {_describe(paths)}")
        if self.consecutive >= self.cfg.max_bad_steps:
            raise FloatingPointError(msg + f". {self.consecutive} bad steps in a row: stopping; {self.kept(epoch)}.")
        warnings.warn(msg)

    def good_step(self) -> None:
        self.consecutive, self.last_bad = 0, None

    def require_finite_weights(self, model: nn.Module, epoch: int, step: Optional[int] = None, lr: float = 0.0,
                               collective: bool = True) -> None:
        """Stop (FloatingPointError) when a weight or buffer holds a nan or inf: it is never saved.
        ``collective``: every process calls it and all stop together (under torchrun); False in
        code that only the main process runs (a collective call there would wait forever)."""
        name = _first_non_finite(model)
        if (all_agree(name is None) if collective else name is None):
            return
        where = (f"after the optimizer step at epoch {epoch + 1}, step {step + 1} (learning rate {lr:.3g})"
                 if step is not None else f"at the end of epoch {epoch + 1}")
        raise FloatingPointError(f"training diverged: the weights became non-finite ({name or 'in another process'} "
                                 f"holds nan or inf) {where}; the run stopped and these weights were not saved; "
                                 f"{self.kept(epoch)}")

    @torch.no_grad()
    def check_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """An epoch that ended on skipped steps: do the weights it leaves still give a non-finite
        loss on the last such batch? Then they diverged (a large but finite learning rate): stop."""
        self.require_finite_weights(model, epoch)
        diverged = False
        if self.last_bad is not None:
            video, target, _ = self.last_bad
            was_training = model.training
            model.eval()  # no batch statistics, no running-stat updates: the weights alone
            try:
                logits = model(video).logits.float()
                diverged = not bool(torch.isfinite(F.cross_entropy(logits, target.long())))
            finally:
                model.train(was_training)
        if not all_agree(not diverged):
            paths = self.last_bad[2] if self.last_bad is not None else []
            raise FloatingPointError(
                f"training diverged: epoch {epoch + 1} ended on {self.consecutive} non-finite loss(es) in a row and the "
                f"weights still give a non-finite loss on those videos ({_describe(paths)}); they were not saved; "
                f"{self.kept(epoch)}")


def _train_one_epoch(net, model, criterion, optimizer, scheduler, loader, transform, device, cfg, epoch,
                     num_updates, autocast, bad_paths, num_classes, guard: _DivergenceGuard,
                     estimate_epochs: int = 0) -> Dict[str, Any]:
    net.train()
    total_loss, seen, excluded, bad_steps = 0.0, 0, 0, 0
    preds: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    batch_hard = batch_noisy = 0
    show_bar = cfg.progress and is_main()
    running_cm = torch.zeros(num_classes, num_classes, dtype=torch.long)  # for the progress bar only
    t0 = time.time()
    bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show_bar, leave=False)
    optimizer.zero_grad(set_to_none=True)
    t_first = None
    for step, batch in enumerate(bar):
        if estimate_epochs and is_main() and step in (1, 1 + _ESTIMATE_STEPS):
            # Measured on this machine before the long part: nobody waits 8 hours by accident.
            if step == 1:
                t_first = time.time()
            else:
                per_step = (time.time() - t_first) / _ESTIMATE_STEPS
                if estimate_epochs * len(loader) * per_step >= _ESTIMATE_MIN_SECONDS:
                    bar.write(time_estimate(estimate_epochs, len(loader), per_step))
        valid = torch.as_tensor(batch["valid"], dtype=torch.bool)
        video, valid = batch_videos(batch, valid, device)  # a video whose frames fail to decode is excluded
        paths = [p for p, ok in zip(batch["path"], valid.tolist()) if ok]
        if not valid.all():
            pad = padding(batch)  # WebDataset runs of equal length: not samples, never reported
            bad = [p for p, ok, filler in zip(batch["path"], valid.tolist(), pad.tolist()) if not ok and not filler]
            bad_paths.update(bad)
            excluded += len(bad)
        last_of_group = (step + 1) % cfg.accum_steps == 0 or step + 1 == len(loader)
        if not all_agree(bool(valid.any())):  # the same branch in every process (DDP)
            continue
        video = transform(video)
        target = torch.as_tensor(batch["label"])[valid].to(device)
        index = torch.as_tensor(batch["index"])[valid].to(device)
        sync = last_of_group or not hasattr(net, "no_sync")
        with (nullcontext() if sync else net.no_sync()), autocast():
            out, loss = criterion.step(net, video, target, index)  # the rule's forward pass(es) and loss
        if not all_agree(bool(torch.isfinite(loss))):
            # Never step on a non-finite loss: the weights stay as they were.
            bad_steps += 1
            optimizer.zero_grad(set_to_none=True)
            guard.bad_step("loss", str(loss.item()), epoch, step, paths, video, target)
            continue
        (loss / cfg.accum_steps).backward()
        if last_of_group:
            bad_grad = _first_non_finite(model, grads=True)
            if not all_agree(bad_grad is None):  # a finite loss can still overflow in the backward pass
                bad_steps += 1
                optimizer.zero_grad(set_to_none=True)
                guard.bad_step("gradient", f"in {bad_grad}" if bad_grad else "elsewhere", epoch, step, paths, video,
                               target)
                continue
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # A finite gradient times a huge or infinite --lr: stop at once, before anything saves them.
            guard.require_finite_weights(model, epoch, step, optimizer.param_groups[0]["lr"])
            num_updates += 1
            scheduler.step_update(num_updates)
        guard.good_step()
        n = int(target.numel())
        seen += n
        total_loss += float(loss.detach()) * n
        preds.append(out.logits.detach().argmax(1).cpu())
        labels.append(target.cpu())
        if criterion.last_flags is not None and criterion.scope == "batch":
            batch_hard += int((criterion.last_flags == HARD).sum())
            batch_noisy += int((criterion.last_flags == NOISY).sum())
        if show_bar:
            running_cm += confusion_matrix(preds[-1], labels[-1], num_classes)
            war, uar = war_uar(running_cm)
            bar.set_postfix(loss=f"{total_loss / max(seen, 1):.3f}", war=f"{war:.3f}", uar=f"{uar:.3f}",
                            clips_s=f"{seen / max(time.time() - t0, 1e-9):.1f}")
    elapsed = time.time() - t0
    from .distributed import all_gather_objects

    gathered = all_gather_objects((total_loss, seen, excluded, bad_steps,
                                   torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long),
                                   torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
                                   sorted(bad_paths)))
    bad_paths.update(*(g[6] for g in gathered))  # every process's unreadable videos, for bad_samples.txt
    total_loss = sum(g[0] for g in gathered)
    seen = sum(g[1] for g in gathered)
    all_preds = torch.cat([g[4] for g in gathered])
    all_labels = torch.cat([g[5] for g in gathered])
    train_metrics = classification_metrics(all_preds, all_labels, num_classes) if seen else {"war": 0.0, "uar": 0.0}
    return {
        "train_loss": total_loss / max(seen, 1),
        "train_war": train_metrics["war"],
        "train_uar": train_metrics["uar"],
        "clips_per_s": seen / max(elapsed, 1e-9),
        "train_videos": seen,  # trained on this epoch, over every process
        "excluded_invalid": sum(g[2] for g in gathered),
        "skipped_steps": sum(g[3] for g in gathered),
        "num_updates": num_updates,
        "batch_hard": batch_hard,
        "batch_noisy": batch_noisy,
    }


def _finish(cfg, model, criterion, train_full, test_loader, val_loader, eval_tf, device, num_classes,
            class_names, rows, bad_paths, run_dir: Path, best_val, meta) -> Dict[str, Any]:
    """Final artefacts: last-epoch model, its test metrics, flags of the training set."""
    preds = run_inference(model, test_loader, device, eval_tf, progress=cfg.progress and is_main(), desc="test")
    logits = preds.logits if preds.logits is not None else torch.zeros(0, num_classes)
    non_finite = int((~torch.isfinite(logits).all(dim=1)).sum())
    if non_finite or _first_non_finite(model) is not None:
        # An arg-max over nan is a class all the same: never report such a model as trained.
        raise FloatingPointError(
            f"training diverged: the trained model gives non-finite outputs for {non_finite} of {len(logits)} test "
            f"videos; model.safetensors and results.json were not written (the last checkpoint holds the same "
            f"weights). Start a new run (another --out, or --overwrite) with a lower --lr or a --grad-clip")
    test = classification_metrics(preds.preds, preds.labels, num_classes, class_names)
    test["excluded_invalid"] = len(preds.invalid_paths)
    results: Dict[str, Any] = {
        "run": str(run_dir),
        "model": dict(model.config),
        "dataset": cfg.dataset,
        "strategy": cfg.strategy,
        "logit_adjustment": float(criterion.logit_adjustment),
        "epochs": cfg.epochs,
        "face_framing": json.loads(meta["rdfer_data"]).get("face_framing"),  # how predict crops raw video
        "test_last_epoch": test,
        "note": "test metrics are those of the last-epoch model (no selection on the test split)",
    }
    if val_loader is not None and (run_dir / "best_val" / "model.safetensors").is_file():
        import copy

        selected = copy.deepcopy(model)  # the validation-selected weights, in a copy
        load_weights(selected, run_dir / "best_val" / "model.safetensors", map_location=device)
        sel = evaluate(selected, test_loader, device, num_classes, class_names, eval_tf)
        results["test_selected_on_validation"] = {"war": sel["war"], "uar": sel["uar"], "val_war": best_val}
    monitored = [r for r in rows if "test_monitor_war" in r]
    if monitored:
        top = max(monitored, key=lambda r: r["test_monitor_war"])
        results["best_test_epoch_selected_on_test_split"] = {
            "epoch": top["epoch"], "war": top["test_monitor_war"], "uar": top["test_monitor_uar"],
            "warning": "selected on the test split: optimistic, not a result to report",
        }
    flags = criterion.flags.cpu()
    results["train_flags"] = {"hard": int((flags == HARD).sum()), "noisy": int((flags == NOISY).sum())}
    gt = getattr(train_full, "is_noisy", None)
    if gt is not None:
        results["noisy_flag_quality"] = flag_quality(flags == NOISY, torch.as_tensor(np.asarray(gt), dtype=torch.bool))
    gt_hard = getattr(train_full, "is_hard", None)
    if gt_hard is not None:
        results["hard_flag_quality"] = flag_quality(flags == HARD, torch.as_tensor(np.asarray(gt_hard), dtype=torch.bool))
    if is_main():
        save_model(model, run_dir / "model.safetensors", {**meta, "epoch": str(cfg.epochs)})
        write_confusion(test, class_names, run_dir)
        _write_train_flags(run_dir / "train_flags.csv", criterion, train_full)
        if bad_paths or preds.invalid_paths:
            atomic_write_text(run_dir / "bad_samples.txt", "\n".join(sorted(set(bad_paths) | set(preds.invalid_paths))) + "\n")
            results["bad_samples"] = len(set(bad_paths) | set(preds.invalid_paths))
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
        from .rundir import finish_run_folder

        finish_run_folder(run_dir, cfg)  # the record of the run: config.yaml that re-runs it, the model card README.md
    return results


def flag_quality(flagged: torch.Tensor, truth: torch.Tensor) -> Dict[str, float]:
    """Precision and recall of boolean flags against boolean ground truth."""
    tp = int((flagged & truth).sum())
    return {
        "flagged": int(flagged.sum()),
        "true": int(truth.sum()),
        "precision": tp / max(int(flagged.sum()), 1),
        "recall": tp / max(int(truth.sum()), 1),
    }


def _write_train_flags(path: Path, criterion: AgreementLoss, dataset) -> None:
    names = ("ordinary", "hard", "noisy")
    seen = criterion.mem_stamp > 0
    target = criterion.corrected_labels()  # the label each sample is trained toward (a correcting rule's)
    lines = ["index,label,mode_class,agreement,confidence,loss,target,flag"]
    for i in seen.nonzero().squeeze(1).tolist():
        lines.append(
            f"{i},{int(criterion.mem_label[i])},{int(criterion.mem_mode[i])},{float(criterion.mem_agreement[i]):.4f},"
            f"{float(criterion.mem_confidence[i]):.4f},{float(criterion.mem_loss[i]):.4f},{int(target[i])},"
            f"{names[int(criterion.flags[i])]}"
        )
    atomic_write_text(path, "\n".join(lines) + "\n")
