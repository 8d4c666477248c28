"""Reading timm checkpoints from disk and loading them into encoder/decoder modules, verified."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# Classifier parts a dense model drops; their keys are never reported as unexpected.
CLASSIFIER_PREFIXES = ("head.", "fc.", "classifier.", "norm_pre.", "head_drop.", "fc_norm.")


class WeightsError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)  # model keys filled from the file
    missing: list[str] = field(default_factory=list)  # model keys the file lacks
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for
    mismatched: list[str] = field(default_factory=list)  # same name, other shape

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded from {self.source}"]
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                more = f" (+{len(keys) - 10} more)" if len(keys) > 10 else ""
                parts.append(f"{len(keys)} {name}: {', '.join(keys[:10])}{more}")
        return "; ".join(parts)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch (.pth/.pt/.bin) file, unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated / wrong format: one clear error
        raise WeightsError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"checkpoint {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def timm_filter(state: dict[str, torch.Tensor], model_name: str) -> dict[str, torch.Tensor]:
    """Apply the timm model module's `checkpoint_filter_fn` (original FB/MS key layouts).

    The filter needs a model for shapes only, so one is built on the meta device.
    """
    import timm

    arch = model_name.split(".")[0]
    try:
        with torch.device("meta"):
            reference = timm.create_model(arch, pretrained=False)
        module = importlib.import_module(type(reference).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        return filter_fn(state, reference) if filter_fn else state
    except Exception as exc:  # a filter that does not apply leaves the keys as they are
        log.debug("timm filter for %s not applied: %s", model_name, exc)
        return state


def _candidates(model_key: str) -> list[str]:
    """File-key spellings of a model key (timm features_only wrappers rename modules)."""
    keys = [model_key]
    if model_key.startswith("model."):  # FeatureGetterNet
        keys.append(model_key[len("model."):])
    head, _, rest = model_key.partition(".")
    if "_" in head:  # FeatureListNet flattens 'stages.0' -> 'stages_0'
        keys.append(head.replace("_", ".") + "." + rest)
    return keys


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str,
               model_name: str | None = None, strict: bool = True) -> LoadReport:
    """Copy matching tensors of `state` into `module`; report every key that does not fit.

    With `strict`, missing or mismatched model keys raise `WeightsError` naming them.
    """
    target = module.state_dict()
    mapping = _map_keys(target, state)
    if model_name and len(mapping) < len(target) // 2:
        filtered = timm_filter(state, model_name)
        refiltered = _map_keys(target, filtered)
        if len(refiltered) > len(mapping):
            state, mapping = filtered, refiltered
    report = LoadReport(source=source)
    to_load = {}
    for model_key, file_key in mapping.items():
        if state[file_key].shape != target[model_key].shape:
            report.mismatched.append(
                f"{model_key} {tuple(state[file_key].shape)} vs {tuple(target[model_key].shape)}"
            )
        else:
            to_load[model_key] = state[file_key]
    report.loaded = sorted(to_load)
    report.missing = sorted(k for k in target if k not in mapping)
    used = set(mapping.values())
    report.unexpected = sorted(
        k for k in state if k not in used and not k.startswith(CLASSIFIER_PREFIXES)
    )
    if strict and (report.missing or report.mismatched):
        raise WeightsError(f"checkpoint does not fit {model_name or 'module'}: {report.summary()}")
    module.load_state_dict(to_load, strict=False)
    if report.unexpected:
        log.warning("unused checkpoint tensors: %s", report.summary())
    return report


def _map_keys(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, str]:
    mapping = {}
    for model_key in target:
        for cand in _candidates(model_key):
            if cand in state:
                mapping[model_key] = cand
                break
    return mapping


def create_timm(
    name: str, pretrained: bool | str, **kwargs
) -> tuple[nn.Module, LoadReport | None]:
    """`timm.create_model` with pretrained = False | True (hub) | local checkpoint path."""
    import timm

    if pretrained is True:
        try:
            return timm.create_model(name, pretrained=True, **kwargs), None
        except Exception as exc:
            raise WeightsError(
                f"cannot fetch pretrained weights for {name} from the timm hub ({exc}); "
                "give a local checkpoint path instead"
            ) from exc
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as exc:  # unknown model name
        raise WeightsError(f"timm cannot build {name!r}: {exc}") from exc
    if not pretrained:
        return model, None
    report = load_state(model, read_checkpoint(pretrained), str(pretrained), model_name=name)
    log.info("%s: %s", name, report.summary())
    return model, report
