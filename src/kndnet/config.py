"""One typed config object for every command: dataclass defaults < the method's role recipe < YAML < CLI overrides.

The defaults are the KNDNet method's recipes (Lishad et al., 2025; see docs/METHOD facts in the README).
The resolved config is written beside every result and stored inside every checkpoint.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kndnet.errors import ConfigError
from kndnet.io import atomic_write_text

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    path: str = ""                 # data folder (any layout `prepare` reads) or a manifest CSV
    format: str = "auto"           # auto | ham10000 | isic2018 | csv | folders
    folds: int = 5                 # lesion-grouped, class-stratified folds
    val_fold: int = 0              # the fold used for model selection (the method used fold 0)
    test_fraction: float = 0.15    # lesion-grouped held-out test split no selection ever sees
    seed: int = 42
    image_size: int = 224          # network input (the method: 224)
    resize_ratio: float = 256 / 224  # train: resize to image_size*ratio, then RandomResizedCrop
    cache: bool = True             # decode JPEGs once into a memory-mapped uint8 array
    cache_dir: str = ""            # where decoded caches live; empty: <run>/cache
    train_views: int = 0           # 0: fresh augmentation per access; K: one of K fixed views per image,
                                   # the views a K-view teacher cache scores (matched KD baseline)
    view_size: int = 0             # 0: train views are made at image_size; N: made at N px, then resized to
                                   # image_size on the device (an online teacher scores the N px view)
    crop_scale_min: float = 0.8    # random crops cover this fraction of the image or more (the method: 0.8)
    jitter_strength: float = 1.0   # scales the method's brightness/contrast/saturation jitter (hue unchanged)
    num_workers: int = 2
    batch_size: int = 32


@dataclass
class ModelConfig:
    arch: str = "kndnet_student"   # kndnet_student, or any timm model name (teacher)
    width: float = 1.5             # student width multiplier (1.5 -> 148,855 parameters)
    num_classes: int = 7
    pretrained: str = "none"       # none | timm | lite-pypi | path/to/state_dict.pt
    freeze_fraction: float = 0.0   # first fraction of backbone parameter tensors frozen (teacher: 0.2)
    dropout: float = 0.15          # student head dropout
    color_constancy: str = "none"  # none | shades_of_gray: per-image white balance (Finlayson & Trezzi 2004)
                                   # as the student's first layer, so every runtime applies it
    student_block: str = "method"  # method (published) | mobilenet: + BN and SiLU after each depthwise conv,
                                   # the same 148,855 parameters (models/student.py)
    student_activation: str = "silu"  # silu (published) | relu6: fused into int8 convs, as EfficientNet-Lite
                                      # did; off in the recipes (runs/v33: lower validation score, same int8 fidelity)
    teacher_dropout: float = 0.0   # timm teachers: dropout before the classifier (timm's drop_rate)
    teacher_drop_path: float = 0.0  # timm teachers: stochastic depth (timm's drop_path_rate; Huang et al. 2016)
    ensemble: str = ""             # teacher in `kndnet run`: more timm models, comma-separated, each trained with
                                   # the same recipe; distillation and the teacher's test row use the mean logit


@dataclass
class TrainConfig:
    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    sampler: str = "balanced"      # balanced (1/class count) | sqrt (1/sqrt(count)) | random
    class_weighted_loss: bool = True
    grad_clip: float = 0.0         # gradient-norm clip; 0 disables
    early_stop_patience: int = 0   # epochs without better val macro-F1; 0 disables
    warmup_epochs: int = 0
    accelerator: str = "auto"
    devices: str = "1"             # "1", "2", "auto"
    num_nodes: int = 1
    strategy: str = "auto"         # auto | ddp | ddp_spawn ...
    precision: str = "32-true"     # 32-true | bf16-mixed | 16-mixed
    channels_last: bool = True     # 1.6x faster student training on CPU (measured)
    compile: bool = True           # torch.compile the model (with channels_last: 2.9x on 2 CPU cores)
    limit_train_batches: float = 1.0
    log_every_n_steps: int = 10
    profiler: str = "none"         # none | simple | advanced: Lightning's profiler, its report in the run
                                   # directory (fit-profile.txt): where each step's time goes
    progress_bar: bool = True
    init_from: str = ""            # warm start from this checkpoint; "none" forbids the pipeline's warm start
    mixup_alpha: float = 0.0       # mixup between images of a batch, lambda ~ Beta(a, a) (Zhang et al., 2018); 0: off
    cutmix_alpha: float = 0.0      # CutMix (Yun et al., 2019); with mixup too, each batch picks one of the two
    ema_decay: float = 0.0         # exponential moving average of the weights, validated and saved; 0: off
    ema_validate_live: bool = True  # with an EMA, also score the live weights each epoch (val_live/*, logged
                                   # only: the EMA is what is selected); false saves a pass per epoch
    progressive_start: int = 0     # progressive resizing: train input (px) at the first epoch, growing to
                                   # data.image_size; 0: off (validation always runs at data.image_size)
    progressive_until: float = 0.75  # fraction of the epochs after which training runs at the final size


@dataclass
class DistillConfig:
    loss: str = "cmkd"             # cmkd (confidence-masked) | hinton | dkd | lskd (logit-standardised)
                                   # | dist (Pearson correlation, inter- and intra-class)
    temperature: float = 2.0
    alpha: float = 0.9             # weight of the cross-entropy term
    threshold: float = 0.65        # teacher confidence needed for a sample to be distilled
    dkd_beta: float = 8.0          # decoupled KD: weight of the non-target term
    dist_beta: float = 1.0         # DIST: weight of the inter-class term (each image's class ranking)
    dist_gamma: float = 1.0        # DIST: weight of the intra-class term (each class's image ranking)
    teacher: str = ""              # teacher checkpoint; several, comma-separated: one teacher, their mean logit
    views: int = 4                 # K cached augmented views per image; 0 in a `run` recipe: no cache,
                                   # the teacher runs online on every (mixed) batch (function matching)
    teacher_cache: str = ""        # folder of cached teacher logits; empty: online teacher
    teacher_prior_shift: bool = False  # move the teacher's logits from the class prior its sampler showed it
                                   # to the one the student's sampler shows (logit adjustment, Menon et al. 2021)
    teacher_hflip: bool = False    # online teacher: average its logits over the view and its mirror
    teacher_size: int = 0          # online teacher: 0 scores each view at the size each teacher was trained at;
                                   # N at N px (off its training size a teacher loses accuracy, and at 128 px the
                                   # `cpu` KD epoch was no faster: docs/RESULTS.md, runs/v35)
    teacher_bf16: bool = False     # online teacher: bf16 autocast (inference only; 1.7x on AMX/AVX-512 CPUs)
    teacher_runtime: str = "torch"  # online teacher: torch | onnxruntime (CPU only, fp32; 1.5-1.8x PyTorch here)
                                   # | auto (onnxruntime when training on the CPU, torch on an accelerator)
    teacher_int8: bool = False     # onnxruntime teacher: static int8, calibrated on training images (~2x fp32
                                   # on AVX-512 VNNI CPUs); fp32 if it calls other classes than fp32
    teacher_split_batch: bool = True  # onnxruntime teacher: each batch as one single-threaded call per thread,
                                   # side by side (same logits; Lite2 int8 1.5x faster on 2 AMX cores)
    transfer_images: str = ""      # online teacher: a folder of unlabelled images it also scores (KD term only);
                                   # a recipe key, not an operational one: other images make another run
    embedding_weight: float = 0.0  # online teacher: weight of matching each teacher's pooled embedding
                                   # through a linear projector (training only); 0: off


@dataclass
class Config:
    role: str = "student"          # teacher | student | distill
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ROLES = ("teacher", "student", "distill")


def _method_defaults(role: str) -> dict[str, Any]:
    """The method's recipe for a role (recipes/method.yaml's role section, without its `common`).

    Why from the file: the method's numbers then live in one place, which `kndnet run --config method`
    reads as well."""
    loaded = yaml.safe_load((RECIPES / "method.yaml").read_text())
    return flatten_keys(loaded.get(role) or {})


def _coerce(value: Any, target_type: Any, key: str) -> Any:
    if isinstance(target_type, str):  # postponed annotations
        target_type = {"int": int, "float": float, "bool": bool, "str": str}[target_type]
    if target_type is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in {"true", "false", "1", "0", "yes", "no"}:
            raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
        return lowered in {"true", "1", "yes"}
    try:
        return target_type(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {target_type.__name__}") from err


def _set(cfg: Config, dotted: str, value: Any) -> None:
    section, _, name = dotted.partition(".")
    target: Any = cfg
    if name:
        if section not in {f.name for f in fields(Config)} or section == "role":
            raise ConfigError(f"unknown config section {section!r} in {dotted!r}; "
                             "sections are data, model, train, distill")
        target = getattr(cfg, section)
    else:
        name = section
    types = {f.name: f.type for f in fields(target)}
    if name not in types:
        raise ConfigError(f"unknown config key {dotted!r}; known keys: "
                         + ", ".join(sorted(types)))
    setattr(target, name, _coerce(value, types[name], dotted))


def flatten_keys(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_keys(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


RECIPES = Path(__file__).parent / "recipes"
RECIPE_SECTIONS = ("common", "teacher", "student", "distill")


def recipe_path(name_or_path: str | Path) -> Path:
    """A config/recipe file path, or the name of a packaged recipe (demo, cpu, cpu_v1 to cpu_v6, method)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = RECIPES / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(f"config {str(name_or_path)!r} not found; pass a YAML file or one of "
                      + ", ".join(p.stem for p in sorted(RECIPES.glob("*.yaml"))))


def _read_mapping(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must be a YAML mapping of sections")
    return loaded


def _parent_recipe(child: Path, parent: Any) -> Path:
    """The file an `extends:` names: a YAML file beside the child, else a packaged recipe (never the working
    folder, so a recipe resolves the same from wherever it is run)."""
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{child}: `extends` must name a packaged recipe (e.g. cpu) or a YAML file beside it, "
                          f"not {parent!r}")
    for candidate in (child.parent / parent, RECIPES / f"{parent}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{child}: `extends: {parent}` names neither a file beside it nor a packaged recipe ("
                      + ", ".join(p.stem for p in sorted(RECIPES.glob("*.yaml"))) + ")")


def _is_recipe(sections: set[str]) -> bool:
    # `distill` is both a flat section and a recipe role: only the other recipe sections (or `distill`
    # alone) tell a recipe from a saved config
    return bool(sections & {"common", "teacher", "student"}) or sections == {"distill"}


def file_layer(path: str | Path, role: str, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Dotted keys a YAML file sets for `role`.

    Two formats: a flat config (sections data/model/train/distill, as saved beside every run) or a
    pipeline recipe (`common` plus one section per role; the role's section overrides `common`). A recipe
    may start from another, `extends: cpu` (a packaged recipe's name or a YAML file beside it): the parent is
    resolved for the role first and everything the child sets, in `common` or in the role's section, wins
    over it, so an earlier recipe reads as its successor and the few keys that differ (recipes/cpu_v6.yaml).
    """
    path = Path(path)
    loaded = _read_mapping(path)
    extends = "extends" in loaded
    parent = loaded.pop("extends", None)
    sections = set(loaded)
    if not extends and not _is_recipe(sections):
        if _chain:
            raise ConfigError(f"{_chain[-1]}: `extends` names {path}, a flat config (like a run's config.yaml); "
                              "extend a recipe (common/teacher/student/distill sections)")
        return flatten_keys(loaded)
    unknown = set(loaded) - set(RECIPE_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown recipe section(s) {', '.join(sorted(unknown))}; use "
                          + ", ".join(RECIPE_SECTIONS) + (" (`extends` works in recipes only)" if extends else ""))
    own = {**flatten_keys(loaded.get("common") or {}), **flatten_keys(loaded.get(role) or {})}
    if not extends:
        return own
    chain, parent_path = (*_chain, path.resolve()), _parent_recipe(path, parent)
    if parent_path.resolve() in chain:
        names = " -> ".join(p.name for p in (*chain, parent_path))
        raise ConfigError(f"{path}: `extends` loops back ({names}); a recipe cannot extend itself")
    return {**file_layer(parent_path, role, chain), **own}


def _nest_keys(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        section, _, name = dotted.partition(".")
        nested.setdefault(section, {})[name] = value
    return nested


def self_contained_recipe(path: str | Path) -> str:
    """A recipe's text as a run keeps it beside its results (recipe.yaml).

    A recipe that `extends` another is written out whole, each role's resolved keys under its section, so
    the run's copy reads the same after the packaged parent has moved on; any other file is kept verbatim.
    """
    path = recipe_path(path)
    text = path.read_text()
    if "extends" not in _read_mapping(path):
        return text
    lines = text.splitlines()
    first_key = next((i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")), len(lines))
    header = "".join(line + "\n" for line in lines[:first_key] if line.startswith("#"))
    resolved = {role: _nest_keys(file_layer(path, role)) for role in ROLES}
    return (header + f"# written out whole from {path.name}, which extends another recipe\n"
            + yaml.safe_dump(resolved, sort_keys=False))


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                role: str | None = None) -> Config:
    """Resolve a config: defaults, then the role's recipe, then the YAML file, then `overrides`.

    `path` is a flat config, a pipeline recipe (its `common` and `role` sections are read) or a packaged
    recipe's name. `overrides` maps dotted keys (``"train.lr"``) to values; None values are ignored so
    that unset CLI flags leave the file's value alone.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    chosen_role = role or overrides.get("role")
    from_file: dict[str, Any] = {}
    if path:
        path = recipe_path(path)
        from_file = file_layer(path, chosen_role or "student")
        chosen_role = chosen_role or from_file.get("role")
    chosen_role = chosen_role or "student"
    if chosen_role not in ROLES:
        raise ConfigError(f"unknown role {chosen_role!r}; choose teacher, student or distill")
    cfg = Config(role=chosen_role)
    for layer in (_method_defaults(chosen_role), from_file, overrides):
        for dotted, value in layer.items():
            if dotted != "role":
                _set(cfg, dotted, value)
    return validate(cfg)


def resolved_recipe(path: str | Path) -> dict[str, dict[str, Any]]:
    """{role: resolved config dict} of a recipe (or config file) for every stage: two recipes are the same recipe
    when these are equal, whatever their text, comments or `extends` chain."""
    return {role: load_config(path, role=role).to_dict() for role in ROLES}


CHOICES = {
    "data.format": ("auto", "ham10000", "isic2018", "csv", "folders"),
    "train.sampler": ("balanced", "sqrt", "random"),
    "model.color_constancy": ("none", "shades_of_gray"),
    "model.student_block": ("method", "mobilenet"),
    "model.student_activation": ("silu", "relu6"),
    "distill.loss": ("cmkd", "hinton", "dkd", "lskd", "dist"),
    "distill.teacher_runtime": ("torch", "onnxruntime", "auto"),
    "train.profiler": ("none", "simple", "advanced"),
}


# Inclusive numeric ranges: (low, high); None leaves that side open.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.folds": (2, None), "data.test_fraction": (0.0, 0.9), "data.image_size": (8, None),
    "data.resize_ratio": (1.0, None), "data.train_views": (0, None), "data.view_size": (0, None),
    "data.crop_scale_min": (0.05, 1.0),
    "data.jitter_strength": (0.0, 9.0),  # 9: brightness down to 0.1x; at 10 a view could be black
    "data.num_workers": (0, None), "data.batch_size": (1, None), "model.width": (0.1, None),
    "model.num_classes": (2, None), "model.freeze_fraction": (0.0, 1.0), "model.dropout": (0.0, 0.99),
    "model.teacher_dropout": (0.0, 0.99), "model.teacher_drop_path": (0.0, 0.99),
    "train.epochs": (1, None), "train.lr": (1e-12, None), "train.weight_decay": (0.0, None),
    "train.label_smoothing": (0.0, 0.99), "train.grad_clip": (0.0, None), "train.early_stop_patience": (0, None),
    "train.warmup_epochs": (0, None), "train.mixup_alpha": (0.0, None), "train.cutmix_alpha": (0.0, None),
    "train.ema_decay": (0.0, 0.999999), "train.progressive_start": (0, None), "train.progressive_until": (0.0, 1.0),
    "distill.temperature": (1e-6, None), "distill.alpha": (0.0, 1.0),
    "distill.dkd_beta": (0.0, None), "distill.views": (0, None), "distill.teacher_size": (0, None),
    "distill.embedding_weight": (0.0, None), "distill.dist_beta": (0.0, None), "distill.dist_gamma": (0.0, None),
}


def _value(cfg: Config, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def validate(cfg: Config) -> Config:
    """Refuse values outside their known choices or ranges, naming the key (a typo must not train silently)."""
    for dotted, allowed in CHOICES.items():
        if _value(cfg, dotted) not in allowed:
            raise ConfigError(f"config key {dotted!r} is {_value(cfg, dotted)!r}; choose one of {', '.join(allowed)}")
    for dotted, (low, high) in RANGES.items():
        value = _value(cfg, dotted)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"config key {dotted!r} is {value!r}; it must be {bounds}")
    if 0 < cfg.data.view_size < cfg.data.image_size:
        raise ConfigError(f"data.view_size {cfg.data.view_size} is below data.image_size {cfg.data.image_size}; "
                          "views are made at view_size and then shrunk to image_size (0 turns this off)")
    _validate_ensemble(cfg)
    _validate_transfer(cfg.role, cfg.distill)
    _validate_teacher_size(cfg.distill)
    _validate_embedding(cfg.distill)
    if cfg.train.progressive_start > cfg.data.image_size:
        raise ConfigError(f"train.progressive_start {cfg.train.progressive_start} is above data.image_size "
                          f"{cfg.data.image_size}; progressive resizing grows the input up to image_size")
    return cfg


def _validate_transfer(role: str, distill: DistillConfig) -> None:
    """Transfer images only mean something to an online teacher: refuse them anywhere else, saying where they go."""
    if not distill.transfer_images:
        return
    if role != "distill":
        raise ConfigError(f"distill.transfer_images ({distill.transfer_images!r}) is for distillation: only a "
                          f"teacher scores those images, and this is the {role} config; put the key in a recipe's "
                          "distill section (not common), or pass --transfer-images to `kndnet distill`")
    if distill.teacher_cache:
        raise ConfigError("distill.transfer_images needs the online teacher, but distill.teacher_cache is set "
                          "and holds logits for the manifest's images only; drop the cache (the teacher then "
                          "scores every batch) or the transfer images")


def _validate_embedding(distill: DistillConfig) -> None:
    """Embedding distillation reads the teachers' pooled features, which only an online teacher gives."""
    if distill.embedding_weight and distill.teacher_cache:
        raise ConfigError("distill.embedding_weight matches the online teacher's embeddings, but "
                          "distill.teacher_cache is set and holds logits only; drop the cache or set the weight to 0")


def _validate_teacher_size(distill: DistillConfig) -> None:
    """A scoring size is for the online teacher, and must leave an EfficientNet something to see."""
    if not distill.teacher_size:
        return
    if distill.teacher_size < 32:
        raise ConfigError(f"distill.teacher_size {distill.teacher_size} px is too small for a teacher to score; "
                          "give at least 32, or 0 for each teacher's trained size")
    if distill.teacher_cache:
        raise ConfigError("distill.teacher_size sets the online teacher's input, but distill.teacher_cache is set "
                          "and its logits were scored at each teacher's trained size; drop one of the two")


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def ensemble_archs(model: ModelConfig) -> list[str]:
    """`model.ensemble` as a list of timm model names (comma-separated, like `distill.teacher`)."""
    return _comma_list(model.ensemble)


def _validate_ensemble(cfg: Config) -> None:
    archs = ensemble_archs(cfg.model)
    if archs and cfg.role != "teacher":
        raise ConfigError(f"model.ensemble ({cfg.model.ensemble!r}) names more teachers, but this is the "
                          f"{cfg.role} config; put it in a recipe's teacher section")
    members = [cfg.model.arch, *archs]
    repeated = sorted({name for name in members if members.count(name) > 1})
    if repeated:
        raise ConfigError(f"model.ensemble repeats {', '.join(repeated)} (model.arch is {cfg.model.arch!r}); "
                          "an ensemble of one architecture trained alike would repeat one teacher: remove "
                          "the repeat from model.ensemble")


def teacher_checkpoints(distill: DistillConfig) -> list[str]:
    """`distill.teacher` as a list: one checkpoint, or the members of an averaged-logit ensemble teacher.

    Why a comma-separated string and not a list: the key stays one string in every config and checkpoint
    written before ensembles existed, and `--set distill.teacher=A,B` works like any other key.
    """
    return _comma_list(distill.teacher)


def config_from_dict(mapping: dict[str, Any]) -> Config:
    """Rebuild a Config from `Config.to_dict()` output (e.g. read back from a checkpoint)."""
    cfg = Config(role=mapping.get("role", "student"))
    for dotted, value in flatten_keys({k: v for k, v in mapping.items() if k != "role"}).items():
        _set(cfg, dotted, value)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# Keys that may hold paths of the machine that trained a model: a shipped config keeps only their file or folder
# names (deploy/export.py). A test fails when a string key is added without saying whether it is one.
PATH_KEYS = frozenset({"data.path", "data.cache_dir", "model.pretrained", "train.init_from", "distill.teacher",
                       "distill.teacher_cache", "distill.transfer_images"})


# Where a run reads its inputs and how it is executed, not what it trains: free to differ on a resume.
OPERATIONAL_KEYS = frozenset({
    "data.path", "data.format", "data.cache", "data.cache_dir", "data.num_workers", "train.accelerator",
    "train.devices", "train.num_nodes", "train.strategy", "train.progress_bar", "train.log_every_n_steps",
    "train.profiler", "train.compile", "distill.teacher", "distill.teacher_cache", "distill.teacher_bf16",
    "distill.teacher_runtime", "distill.teacher_split_batch",
})


def config_differences(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} of every key whose value differs between two configs."""
    before, after = flatten_keys(old.to_dict()), flatten_keys(new.to_dict())
    return {key: (before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)}


def recipe_differences(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Recipe keys whose value in `cfg` differs from a run's saved config, as 'key: old -> new'.

    The saved config is read back through the defaults, so a key added to the toolkit after the run
    was made counts as its default, not as a change.
    """
    changed = config_differences(config_from_dict(saved), cfg)
    return [f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items() if key not in OPERATIONAL_KEYS]


def listed_differences(changed: list[str], limit: int = 6) -> str:
    """recipe_differences' lines joined for an error message, the first `limit` of them."""
    more = f"; and {len(changed) - limit} more" if len(changed) > limit else ""
    return "; ".join(changed[:limit]) + more


def parse_set_options(items: typing.Iterable[str]) -> dict[str, str]:
    """Parse repeated ``--set key=value`` options into a dict of dotted overrides."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. train.lr=1e-3), got {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainConfig", "DistillConfig", "ROLES",
    "IMAGENET_MEAN", "IMAGENET_STD", "load_config", "recipe_path", "config_from_dict", "save_config",
    "parse_set_options", "teacher_checkpoints", "ensemble_archs",
]
