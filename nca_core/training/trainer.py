"""The training loop: progress bar, TensorBoard, checkpoints, resume, best model."""
from __future__ import annotations

import os
import pickle
import platform
import random
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .. import __version__
from ..inference.ensemble import run_ensemble
from ..atomic import atomic_path, write_json
from ..inference.devices import pick_device
from ..errors import NCAError
from ..space.grid import common_grid
from ..quality.metrics import mean_foreground_dice
from ..network.model import LevelPlan, M3DNCA
from ..modelfile.bundle import ModelBundle, save_model
from ..space.preprocessing import Preprocessing, model_input, pad_end, prepare
from ..space.prior import fit_location_prior, jittered_prior
from ..space.standardise import fit_landmarks
from .augment import augmenter
from .data import Case, check_cases_found, find_pairs, load_cases, one_hot, read_split, split_names
from .loss import dice_bce_loss
from .settings import TrainSettings

CHECKPOINT = "checkpoint.pt"
SPLIT = "split.json"
BEST_MODEL = "best.m3dnca"
LAST_MODEL = "last.m3dnca"


@dataclass
class TrainingResult:
    run_dir: Path
    iterations: int
    best_dice: float
    best_iteration: int
    seconds: float


class Trainer:
    """Trains one model into ``run_dir``; resumable from its checkpoint."""

    def __init__(self, data_dir: Path, run_dir: Path, settings: TrainSettings, device: str = "auto",
                 initial: Optional[ModelBundle] = None, split_file: Optional[Path] = None):
        """``initial``: start from this model's weights (fine-tuning); ``split_file``: reuse another
        run's split.json instead of drawing a new split."""
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.device = pick_device(device)
        self.config = settings.config
        self.preprocessing = Preprocessing()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)  # the same settings give the same initial weights
            self.model = M3DNCA(self.config).to(self.device)
        self.initialised_from = None
        self.initial_preprocessing = None if initial is None else initial.preprocessing
        if initial is not None:
            if initial.config.input_channels != self.config.input_channels:
                wanted = initial.config.input_channels
                raise NCAError(f"--init: the model reads {wanted} input channel(s), the training settings' model "
                               f"{self.config.input_channels}; train it with \"location_prior\": "
                               f"{'true' if wanted == 2 else 'false'} and model.input_channels {wanted} "
                               "(a --config file)")
            standardised = initial.preprocessing.intensity_landmarks is not None
            if standardised != settings.standardise_intensity:
                raise NCAError(f"--init: the model was trained {'with' if standardised else 'without'} intensity "
                               f"standardisation; fine-tune it with \"standardise_intensity\": "
                               f"{'true' if standardised else 'false'} (a --config file)")
            if replace(initial.config, steps=self.config.steps) != self.config:
                raise NCAError("--init: the model's config differs from the training settings' model "
                               "(only the steps may differ)")
            self.model.load_state_dict(initial.weights)
            self.initialised_from = initial.provenance.get("description") or "a model file"
        self.split_file = Path(split_file) if split_file else None
        self.optimizer = torch.optim.Adam(
            [{"params": level.parameters()} for level in self.model.levels],
            lr=settings.learning_rate,
            betas=tuple(settings.betas),
        )
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, settings.lr_gamma)
        self.averaged: Optional[AveragedModel] = None
        if settings.ema_decay > 0:
            self.averaged = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
        self.iteration = 0
        self.best_dice = -1.0
        self.best_iteration = 0
        self.elapsed = 0.0
        self.history: List[Dict[str, float]] = []

    # ---- data -------------------------------------------------------------------
    def load_data(self) -> None:
        """Load the cases and the split and check both; nothing is written (``fit`` saves the split)."""
        cases = load_cases(find_pairs(self.data_dir), self.settings.merge_labels)
        by_name = {c.name: c for c in cases}
        self.split = self._checked_split(list(by_name))
        self.preprocessing = self._training_grid([by_name[n] for n in self.split["train"]])
        self.train_cases = [by_name[n].on_model_grid(self.preprocessing) for n in self.split["train"]]
        if self.settings.location_prior:
            if not self.preprocessing.relative_to_field_of_view:
                raise NCAError("location_prior needs a field-of-view grid (preprocessing with grid_shape, as "
                               "in the prostate preset)")
            labels = [case.label for case in self.train_cases]
            self.preprocessing = replace(self.preprocessing, location_prior=fit_location_prior(labels))
        if self.settings.standardise_intensity:
            landmarks = fit_landmarks(case.image for case in self.train_cases)
            self.preprocessing = replace(self.preprocessing, intensity_landmarks=landmarks)
        self.validation_cases = [by_name[n].on_model_grid(self.preprocessing) for n in self.split["validation"]]
        self._prepared = {c.name: self._prepare(c) for c in self.train_cases}
        self._augment = augmenter(self.settings.augmentation_strength) if self.settings.augment else None

    def _training_grid(self, cases: List[Case]) -> Preprocessing:
        """The preprocessing with the grid to train on: the settings' own (a field-of-view grid),
        else the initial model's when fine-tuning one that has it, else the training images'
        common grid."""
        given = self.settings.given_preprocessing
        if given is not None:
            return given
        initial = self.initial_preprocessing
        if initial is not None and initial.relative_to_field_of_view:
            return replace(self.preprocessing, orientation=initial.orientation, grid_shape=initial.grid_shape,
                           fov_fraction=initial.fov_fraction)
        if initial is not None and initial.spacing is not None:
            spacing, orientation = initial.spacing, initial.orientation
        else:
            spacing, orientation = common_grid([(c.volume.spacing, c.volume.reference.GetDirection()) for c in cases])
        return replace(self.preprocessing, spacing=spacing, orientation=orientation)

    def _checked_split(self, names: List[str]) -> Dict[str, List[str]]:
        """The run's own split.json, else the split file passed in, else a new split; each
        must leave at least one case to train on."""
        source = self.run_dir / SPLIT if (self.run_dir / SPLIT).is_file() else self.split_file
        if source is None:
            split = split_names(names, self.settings.validation_fraction, self.settings.seed)
            if not split["train"]:
                raise NCAError(f"{self.data_dir}: {len(names)} case{'s' * (len(names) != 1)} and validation_fraction "
                               f"{self.settings.validation_fraction:g} leave no case to train on; add cases, or "
                               "train without validation (validation_fraction 0 in a --config file)")
            return dict(split, data=str(self.data_dir.resolve()))
        split = read_split(source)
        check_cases_found(split["train"] + split["validation"], names, source, self.data_dir)
        if not split["train"]:
            raise NCAError(f"{source}: its 'train' list is empty, which leaves no case to train on")
        return split

    def _prepare(self, case: Case):
        image = prepare(case.image, self.preprocessing, self.model.multiple)
        target = pad_end(one_hot(case.label, self.config.output_channels), (self.config.output_channels,) + image.shape)
        return torch.from_numpy(image), torch.from_numpy(target)

    # ---- checkpoints ------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "best_dice": self.best_dice,
            "best_iteration": self.best_iteration,
            "elapsed": self.elapsed,
            "history": self.history,
            "initialised_from": self.initialised_from,
        }
        if self.averaged is not None:
            state["averaged"] = self.averaged.state_dict()
        with atomic_path(self.run_dir / CHECKPOINT) as temporary:
            torch.save(state, temporary)

    def load_checkpoint(self) -> None:
        """Continue from the run's checkpoint; NCAError if it is corrupt or of another run."""
        path = self.run_dir / CHECKPOINT
        try:
            with warnings.catch_warnings():  # e.g. about the pickle protocol of a file that is no checkpoint
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location=self.device, weights_only=True)
            self._restore(state)
        except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
            # a truncated zip, junk, a refused pickle, or content that is no checkpoint of this model
            raise NCAError(f"{path}: corrupt or not a checkpoint of this run ({_first_sentence(error)})") from None

    def _restore(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.best_dice = float(state["best_dice"])
        self.best_iteration = int(state["best_iteration"])
        self.elapsed = float(state["elapsed"])
        self.history = list(state["history"])
        self.initialised_from = state.get("initialised_from", self.initialised_from)
        if self.averaged is not None and "averaged" in state:
            self.averaged.load_state_dict(state["averaged"])

    # ---- one iteration ----------------------------------------------------------
    def _case_for(self, iteration: int) -> Case:
        count = len(self.train_cases)
        epoch, index = divmod(iteration, count)
        order = list(range(count))
        random.Random(self.settings.seed * 1_000_003 + epoch).shuffle(order)
        return self.train_cases[order[index]]

    def _batch(self, rng: random.Random) -> Tuple[torch.Tensor, torch.Tensor, List[List[int]]]:
        """This iteration's cases, each duplicated: model inputs (B, C, X, Y, Z), targets
        (B, K, X, Y, Z), and each element's size before zero padding to the largest."""
        count, copies = self.settings.cases_per_step, self.settings.batch_duplication
        pairs = []
        for index in range(count):
            image, target = self._prepared[self._case_for(self.iteration * count + index).name]
            if self._augment is not None:
                image, target = self._augment(image, target, rng)
            pairs.append((image, target))
        shape = [max(sizes) for sizes in zip(*(image.shape for image, _ in pairs))]
        channels = [self.preprocessing.input_channels]
        inputs = [model_input(image.numpy(), self._input_spec(rng)) for image, _ in pairs]
        images = torch.stack([torch.from_numpy(pad_end(array, channels + shape)) for array in inputs])
        targets = torch.stack([torch.from_numpy(pad_end(target.numpy(), [len(target)] + shape)) for _, target in pairs])
        extents = [list(image.shape) for image, _ in pairs for _ in range(copies)]
        return images.repeat_interleave(copies, 0), targets.repeat_interleave(copies, 0), extents

    def _input_spec(self, rng: random.Random) -> Preprocessing:
        """The preprocessing that builds one training input: the model's, with its location prior
        jittered when ``prior_jitter`` asks for it (the rng is untouched otherwise)."""
        prior, strength = self.preprocessing.location_prior, self.settings.prior_jitter
        if prior is None or strength == 0:
            return self.preprocessing
        return replace(self.preprocessing, location_prior=jittered_prior(prior, strength, rng))

    def _focus(self, targets: torch.Tensor, rng: random.Random) -> Optional[List[Optional[List[int]]]]:
        """Per batch element, with probability ``foreground_patches``, a random foreground voxel
        for its patches to contain; None where a patch may lie anywhere."""
        share = self.settings.foreground_patches
        if share == 0:
            return None
        focus: List[Optional[List[int]]] = []
        for target in targets:
            voxels = torch.nonzero(target.sum(0)) if rng.random() < share else None
            focus.append(None if voxels is None or not len(voxels) else voxels[rng.randrange(len(voxels))].tolist())
        return focus

    def train_step(self) -> float:
        """One optimiser step on ``cases_per_step`` cases (duplicated); deterministic in the iteration."""
        rng = random.Random(self.settings.seed * 7_919 + self.iteration)
        images, targets, extents = self._batch(rng)
        padded = any(list(images.shape[2:]) != extent for extent in extents)
        plan = LevelPlan(
            steps=self.config.steps,
            fire_rate=self.config.fire_rate,
            seed=rng.getrandbits(31),
            per_sample_stats=True,
            patch_sizes=self.settings.patch_sizes,
            rng=rng,
            extents=extents if padded else None,
            focus=self._focus(targets, rng),
            coarse_states=[] if self.settings.coarse_supervision else None,
        )
        self.model.train()
        targets = targets.to(self.device)
        state, origins = self.model(images.to(self.device), plan)
        unpadded = extents if padded else None
        loss = self._level_loss(state, origins, targets, unpadded, self.config.levels - 1)
        for level, (coarse, coarse_origins) in enumerate(plan.coarse_states or []):
            coarse_loss = self._level_loss(coarse, coarse_origins, targets, unpadded, level)
            loss = loss + self.settings.coarse_supervision * coarse_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        self.iteration += 1
        return float(loss.detach())

    def _level_loss(self, state: torch.Tensor, origins: torch.Tensor, targets: torch.Tensor,
                    extents: Optional[List[List[int]]], level: int) -> torch.Tensor:
        """The loss of one level's output against the targets averaged onto its cells (the
        finest level: the targets themselves), its region at ``origins``; ``extents`` leave the
        padding out."""
        logits = state[:, self.model.output_slice()]
        factor = self.model.level_factor(level)
        on_cells = F.avg_pool3d(targets, factor) if factor > 1 else targets
        truth = M3DNCA._gather(on_cells, origins, logits.shape[2:])
        valid = None if extents is None else self.model.valid_mask(extents, origins, logits.shape[2:], level).to(logits)
        return dice_bce_loss(logits, truth, valid)

    # ---- validation -------------------------------------------------------------
    @property
    def result_model(self) -> M3DNCA:
        """The weights that are validated and saved: the moving average when enabled."""
        return self.model if self.averaged is None else self.averaged.module

    def validate(self, runs: int) -> Dict[str, float]:
        """Mean ± std hard Dice over the validation cases."""
        return self._validate(runs)[0]

    def _validate(self, runs: int) -> Tuple[Dict[str, float], np.ndarray]:
        """The validation summary and the first case's label map (for TensorBoard)."""
        dices, labels = [], []
        for case in self.validation_cases:
            result = run_ensemble(self.result_model, case.image, self.preprocessing, runs=runs, seed=0, device=self.device)
            dices.append(mean_foreground_dice(result.labels, case.label, self.config.output_channels))
            labels.append(result.labels)
        summary = {"dice_mean": float(np.mean(dices)), "dice_std": float(np.std(dices)), "cases": len(dices)}
        return summary, labels[0]

    def bundle(self, validation: Dict[str, float]) -> ModelBundle:
        provenance = {
            "description": f"M3D-NCA trained on {self.data_dir.name}",
            "data": str(self.data_dir.resolve()),
            "training_cases": len(self.train_cases),
            "validation_cases": self.split["validation"],
            "settings": self.settings.to_dict(),
            "initialised_from": self.initialised_from,
            "iterations": self.iteration,
            "training_seconds": round(self.elapsed, 1),
            "hardware": _hardware(self.device),
            "validation": validation,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "software": f"nca_core {__version__}, torch {torch.__version__}",
        }
        return ModelBundle.from_model(self.result_model, preprocessing=self.preprocessing, provenance=provenance)

    # ---- the loop ---------------------------------------------------------------
    def fit(self, resume: bool = False, log: bool = True) -> TrainingResult:
        if (self.run_dir / CHECKPOINT).exists():
            if not resume:
                raise NCAError(f"{self.run_dir}: holds a training run already; pass --resume to continue it")
            self.load_checkpoint()
            self._check_work_left()
        self.load_data()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / "settings.json", self.settings.to_dict())
        write_json(self.run_dir / SPLIT, self.split)
        writer = _tensorboard(self.run_dir) if log else None
        limit = self.settings.time_limit_minutes
        total = self.settings.iterations
        bar = tqdm(total=total, initial=self.iteration, desc="training", unit="it", disable=not log)
        try:
            while self.iteration < total:
                if limit is not None and self.elapsed >= limit * 60:
                    break
                started = time.perf_counter()
                loss = self.train_step()
                self.elapsed += time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", best=f"{max(self.best_dice, 0):.3f}")
                if writer:
                    writer.add_scalar("loss", loss, self.iteration)
                    writer.add_scalar("learning_rate", self.scheduler.get_last_lr()[0], self.iteration)
                if self.iteration % self.settings.validate_every == 0 or self.iteration == total:
                    self._validation_round(writer)
                if self.iteration % self.settings.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
            self.save_checkpoint()
            if writer:
                writer.close()
        return TrainingResult(self.run_dir, self.iteration, self.best_dice, self.best_iteration, self.elapsed)

    def _check_work_left(self) -> None:
        """A resumed run with nothing left to do says, in one line, how to extend it."""
        if self.iteration >= self.settings.iterations:
            raise NCAError(f"{self.run_dir}: all {self.iteration} iterations are done; "
                           "pass a larger --iterations to train on")
        limit = self.settings.time_limit_minutes
        if limit is not None and self.elapsed >= limit * 60:
            raise NCAError(f"{self.run_dir}: its time limit of {limit:g} min (training time in all, over "
                           f"every sitting) is used up at {self.elapsed / 60:.1f} min; "
                           "pass a larger --time-limit to train on")

    def _validation_round(self, writer) -> None:
        if not self.validation_cases:
            save_model(self.bundle({}), self.run_dir / BEST_MODEL)
            return
        started = time.perf_counter()
        validation, first_labels = self._validate(self.settings.validation_runs)
        self.elapsed += time.perf_counter() - started
        self.history.append({"iteration": self.iteration, "seconds": round(self.elapsed, 1), **validation})
        write_json(self.run_dir / "history.json", self.history)
        bundle = self.bundle(validation)
        save_model(bundle, self.run_dir / LAST_MODEL)
        if validation["dice_mean"] > self.best_dice:
            self.best_dice = validation["dice_mean"]
            self.best_iteration = self.iteration
            save_model(bundle, self.run_dir / BEST_MODEL)
        if writer:
            writer.add_scalar("validation/dice", validation["dice_mean"], self.iteration)
            writer.add_image("validation/example", self._example_slice(first_labels), self.iteration, dataformats="HW")
        tqdm.write(f"iteration {self.iteration}: validation Dice {validation['dice_mean']:.4f} "
                   f"± {validation['dice_std']:.4f} ({self.elapsed / 60:.1f} min)")

    def _example_slice(self, labels: np.ndarray) -> np.ndarray:
        """Image, truth and prediction side by side: the first validation case's middle slice."""
        case = self.validation_cases[0]
        middle = case.image.shape[2] // 2
        image = case.image[:, :, middle]
        image = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
        return np.concatenate([image, case.label[:, :, middle] > 0, labels[:, :, middle] > 0], axis=1).astype(np.float32)


def _first_sentence(error: Exception) -> str:
    """The error's type and the first sentence of its message."""
    lines = str(error).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".:") if lines else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"))


def _hardware(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {threads} thread{'s' * (threads != 1)}"
