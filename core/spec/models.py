"""The spec models: what a run spec may say, each field bounded and described.

Components are written `{"name": ..., "options": {...}}` (a bare string is
shorthand). The models keep options as plain dicts; tlzoo.spec.resolve validates
them with each component's own `Options` model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from tlzoo.spec.problems import shorten
from tlzoo.trust.options import DEFAULT_METHOD, METHOD_OPTIONS


# Upper bounds keep a spec that validates from failing (or exhausting memory) once it runs;
# each is far above any real transfer-learning run.
MAX_EPOCHS = 10_000  # the strategy plan and the cache hold one small entry per epoch
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_LR = 100.0
MAX_HIDDEN = 65_536  # a hidden layer of 10^9 units would need terabytes
MAX_WORKERS = 256
MAX_NAME = 100
StrictInteger = Annotated[int, Strict()]  # `true` is not 1 epoch; "5" is not 5
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # ints welcome, bools, NaN and Infinity not
DEVICE = re.compile(r"(auto|cpu|cuda(:[0-9]{1,3})?)")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BareName(StrictModel):
    """A component written `{"name": ..., ...}` or just its name (a bare string)."""

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ComponentRef(BareName):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class WeightsFile(StrictModel):
    path: str = Field(description="A .safetensors, .pt or .pth state dict for the original network")


class BackboneSpec(ComponentRef):
    name: str = "efficientnet_lite0"
    weights: str | WeightsFile = Field(
        "pretrained",
        description="'pretrained' (the backbone's default), 'none', a named variant, or {'path': ...}",
    )


class HeadSpec(StrictModel):
    dropout: Number = Field(0.0, ge=0.0, lt=1.0)
    hidden: StrictInteger | None = Field(None, gt=0, le=MAX_HIDDEN, description="width of an optional hidden layer")


class DataSpec(StrictModel):
    reader: ComponentRef
    batch_size: StrictInteger = Field(32, gt=0, le=65_536)
    eval_batch_size: StrictInteger | None = Field(None, gt=0, le=65_536)
    num_workers: StrictInteger | Literal["auto"] = Field("auto", description=f"'auto' or 0..{MAX_WORKERS}")
    augment: str | list[dict[str, Any]] = Field(
        "light", description="a preset name (none, light, rotate_flip, strong) or a list of {'op': ..., ...}"
    )
    bad_files: Literal["skip", "error"] = "skip"
    max_bad_fraction: Number = Field(0.01, ge=0.0, le=1.0, description=(
        "the run stops before training when more than this fraction of the inputs are bad "
        "(and more than tolerated_bad_files)"))
    tolerated_bad_files: StrictInteger = Field(5, ge=0, le=1_000_000, description=(
        "this many bad inputs are skipped whatever max_bad_fraction says, so that one broken file does not "
        "stop a small data set; 0 leaves max_bad_fraction alone to decide"))
    background: tuple[Annotated[int, Strict(), Field(ge=0, le=255)], ...] = Field(
        (255, 255, 255), min_length=3, max_length=3, description="RGB, each 0-255")
    allow_empty_classes: bool = False

    @field_validator("num_workers", mode="wrap")
    @classmethod
    def _worker_count(cls, value: Any, handler) -> Any:
        # one message instead of one per branch of the union
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WORKERS):
            return handler(value)
        raise ValueError(f"{shorten(repr(value))} is not a worker count: use 'auto' or an integer 0..{MAX_WORKERS}")


class OptimizerSpec(BareName):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: Number = Field(1e-3, gt=0, le=MAX_LR)
    weight_decay: Number = Field(0.0, ge=0, le=MAX_LR)
    momentum: Number = Field(0.9, ge=0, lt=1)
    nesterov: bool = False


class SchedulerSpec(BareName):
    name: Literal["none", "step", "cosine", "onecycle"] = "cosine"
    step_size: StrictInteger = Field(5, gt=0, le=MAX_EPOCHS, description="epochs between decays (step)")
    gamma: Number = Field(0.5, gt=0, le=1, description="decay factor (step)")
    warmup_epochs: Number = Field(0.0, ge=0, le=MAX_EPOCHS, description="linear warm-up (cosine)")
    min_lr_ratio: Number = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr (cosine)")


class EarlyStoppingSpec(StrictModel):
    patience: StrictInteger | None = Field(None, gt=0, le=MAX_EPOCHS,
                                           description="epochs without improvement before stopping")
    min_delta: Number = Field(0.0, ge=0)


class DistributedSpec(StrictModel):
    """How the processes of a torchrun job talk; ignored by a single-process run."""

    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="'auto': NCCL on CUDA, gloo on CPU")
    timeout_s: StrictInteger = Field(1800, ge=10, le=86_400, description="seconds a collective waits for the "
                                     "other processes before the job stops (a rank that died or hangs)")


class EmaSpec(StrictModel):
    """An exponential moving average of the trainable weights (timm's ModelEmaV3), validated every epoch."""

    enabled: bool = Field(False, description="keep the average; it becomes best when it validates better")
    decay: Number = Field(0.998, gt=0, lt=1, description="weight of the old average at each step")
    warmup: bool = Field(True, description="decay grows as 1 - (1 + step / warmup_gamma) ^ -warmup_power, "
                                           "capped at decay (timm's use_warmup)")
    warmup_gamma: Number = Field(1.0, gt=0, le=1e6)
    warmup_power: Number = Field(2 / 3, gt=0, le=10)
    update_after_step: StrictInteger = Field(0, ge=0, le=10**9, description="the average copies the weights "
                                             "until this step")


class MixSpec(StrictModel):
    """mixup/cutmix where the trainable part starts: images when nothing is frozen, else the (cached)
    activations of the frozen prefix (manifold mixup), so the activation cache still serves."""

    mixup_alpha: Number = Field(0.0, ge=0, le=100, description="Beta(alpha, alpha) mixing weights; 0: off")
    cutmix_alpha: Number = Field(0.0, ge=0, le=100, description="Beta(alpha, alpha) box areas on images or "
                                 "feature maps (pooled features get mixup); 0: off")
    prob: Number = Field(1.0, ge=0, le=1, description="chance that a batch is mixed")
    switch_prob: Number = Field(0.5, ge=0, le=1, description="with both on: chance of cutmix over mixup")


TTA_VIEWS = Literal["none", "flip", "flip_crops"]


class CalibrationSpec(BareName):
    """Temperature scaling: after training, one temperature fitted on the validation split's logits of the best
    model (NLL minimised) divides the logits of evaluate, predict and exported models; 'none' keeps them."""

    name: Literal["temperature", "none"] = "temperature"
    min_temperature: Number = Field(0.25, gt=0, le=1, description="lowest temperature the fit may choose (a "
                                    "validation split without errors pulls it to this bound)")
    max_temperature: Number = Field(10.0, ge=1, le=1000, description="highest temperature the fit may choose")


class UnknownSpec(StrictModel):
    """Calling images unknown: an out-of-distribution score per image and a threshold chosen on the validation
    split so that `keep` of its (known) images are kept; predict marks the others unknown."""

    method: Literal["knn", "msp", "energy", "mahalanobis", "none"] = Field(
        DEFAULT_METHOD, description="knn: distance to the nearest training features; msp: 1 - max probability; "
        "energy: -logsumexp(logits); mahalanobis: distance to the class means; none: never unknown")
    keep: Number = Field(0.95, gt=0, le=1, description="share of known (validation) images kept")
    options: dict[str, Any] = Field(default_factory=dict, description="the method's own options (knn: k, "
                                    "bank_size; mahalanobis: shrinkage, bank_size)")

    @model_validator(mode="before")
    @classmethod
    def _bare_method(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value

    @field_validator("options")
    @classmethod
    def _method_options(cls, options: dict[str, Any], info) -> dict[str, Any]:
        from pydantic import ValidationError

        method = info.data.get("method")
        if method is None:  # the method itself is wrong: its own problem is reported
            return options
        try:
            METHOD_OPTIONS[method].model_validate(options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            takes = ", ".join(METHOD_OPTIONS[method].model_fields) or "no options"
            raise ValueError(f"{where}: {first['msg']} (method {method!r} takes {takes})") from None
        return options


class HeadFirstSpec(StrictModel):
    """LP-FT: before the first epoch, the new head is trained alone on the frozen pretrained backbone's pooled
    features (no augmentation, through the activation cache), so that the groups a fine-tune trains start under
    a head that already fits them instead of a random one, which first pulls them towards its own noise."""

    epochs: StrictInteger = Field(0, ge=0, le=MAX_EPOCHS, description="epochs of the head alone on the frozen "
                                  "features; 0: off (the head starts from its initialisation)")
    lr: Number = Field(3e-3, gt=0, le=MAX_LR, description="AdamW's lr for them (cosine; weight decay and "
                       "label smoothing as train's)")


class TrainSpec(StrictModel):
    strategy: ComponentRef = ComponentRef(name="head_only")
    epochs: StrictInteger = Field(10, gt=0, le=MAX_EPOCHS,
                                  description=f"at most {MAX_EPOCHS} (plans and caches keep an entry per epoch)")
    optimizer: OptimizerSpec = OptimizerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    backbone_lr_mult: Number = Field(0.1, gt=0, le=MAX_LR, description="backbone lr = lr x this (discriminative lr)")
    label_smoothing: Number = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    bn: Literal["frozen", "train"] = Field("frozen", description="BatchNorm of frozen groups")
    monitor: Literal["val_top1", "val_loss"] = "val_top1"
    keep: Literal["best", "last"] = Field("best", description="the epoch whose weights the run keeps "
                                          "(best.safetensors, the test split's score): 'best' by `monitor`, or "
                                          "'last' (the last epoch whose `monitor` is finite)")
    seed: StrictInteger = Field(0, ge=0, le=MAX_SEED)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    distributed: DistributedSpec = DistributedSpec()
    ema: EmaSpec = EmaSpec()
    mix: MixSpec = MixSpec()
    layer_decay: Number | None = Field(None, gt=0, le=1, description="fine-tuning: group g of G (head last) "
                                       "gets lr x layer_decay ^ (G - 1 - g) on top of backbone_lr_mult (timm's "
                                       "--layer-decay); none: off")
    tta: TTA_VIEWS = Field("none", description="test-time augmentation of the per-epoch validation: 'flip' "
                           "(2 views) or 'flip_crops' (6 views), probabilities averaged")
    head_first: HeadFirstSpec = HeadFirstSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    unknown: UnknownSpec = UnknownSpec()
    refit: bool = Field(False, description="after training, train again from the start on the training and "
                        "validation images together, as many epochs as the first training ran, and keep the last "
                        "epoch's weights (scikit-learn's refit): "
                        "the validation figures, temperature and unknown threshold stay those measured before "
                        "on images the model had not seen; the test split scores the refitted model")

    @model_validator(mode="after")
    def _refit_keeps_the_model(self):
        if self.refit and self.ema.enabled:
            raise ValueError("train.refit keeps the refitted model's own weights, and with train.ema the kept "
                             "weights may be the average: turn one of them off")
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"{shorten(value)!r} is not a device tlzoo runs on: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value


class CacheSpec(StrictModel):
    enabled: bool | Literal["auto"] = "auto"
    views: StrictInteger = Field(4, gt=0, le=1000, description="augmented views cached per image when augmentation is random")
    memory_mb: StrictInteger = Field(2048, ge=0, le=2**30, description="RAM for cached activations before spilling to disk")
    dir: str | None = Field(None, description="where the cache lives (default: ~/.cache/tlzoo)")


class ReportSpec(StrictModel):
    enabled: bool = Field(True, description="write report.html (and its figures) into the run directory at the end")
    top_losses: StrictInteger = Field(16, ge=0, le=1000, description="validation images with the highest loss shown")
    findings: bool = Field(True, description="look for likely mislabelled images, duplicates and leaks, outliers "
                                            "and class imbalance (as tlzoo inspect); writes issues.csv and a "
                                            "report section")


ALWAYS_ON_LOGGER = "metrics"  # metrics.jsonl/csv: the run directory's record of its epochs, read by the report


class RunSpec(StrictModel):
    name: str | None = Field(None, description="run name (default: the spec file's stem); one folder name, no '/'")
    backbone: BackboneSpec = BackboneSpec()
    head: HeadSpec = HeadSpec()
    data: DataSpec
    train: TrainSpec = TrainSpec()
    cache: CacheSpec = CacheSpec()
    report: ReportSpec = ReportSpec()
    loggers: list[ComponentRef] = Field(
        default_factory=lambda: [ComponentRef(name=ALWAYS_ON_LOGGER)],
        description="run loggers (tlzoo list loggers), e.g. [\"tensorboard\"]; 'metrics' is always added")
    output: str = Field("runs", min_length=1, description="folder that receives one run directory per run")
    base_dir: str | None = Field(None, description="folder that relative paths start from (default: the spec "
                                                   "file's folder); a run directory's spec.json sets it")

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, value: str | None) -> str | None:
        if value is not None:
            check_run_name(value)
        return value

    @field_validator("loggers")
    @classmethod
    def _metrics_always_on(cls, value: list[ComponentRef]) -> list[ComponentRef]:
        if any(ref.name == ALWAYS_ON_LOGGER for ref in value):
            return value
        return [*value, ComponentRef(name=ALWAYS_ON_LOGGER)]  # appended: loggers.N still names the user's entry N

    @field_validator("output")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("a path cannot contain a NUL character")
        return value


def check_run_name(value: str) -> None:
    """The run directory is `output/<name>`: the name must be one plain folder name."""
    if not value or len(value) > MAX_NAME:
        raise ValueError(f"a run name has 1 to {MAX_NAME} characters (this one has {len(value)})")
    if value in (".", "..") or any(sep in value for sep in ("/", "\\")):
        raise ValueError(f"{shorten(value)!r} is not one folder name: no '/', '\\', '.' or '..' "
                         "(the run directory must stay inside `output`)")
    if any(ord(char) < 32 for char in value):
        raise ValueError("a run name cannot contain control characters such as NUL or a newline")
