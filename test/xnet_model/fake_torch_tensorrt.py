"""Fake `torch_tensorrt` modules, one per API generation, for tests on machines without CUDA.

Each fake mirrors the real release it stands for, read from github.com/pytorch/TensorRT at the
tag in its name: the *signatures* (parameter names, positional/keyword-only kinds, the defaults
the backend depends on, **kwargs) of `dynamo.compile` (py/torch_tensorrt/dynamo/_compiler.py),
`save` / `load` (py/torch_tensorrt/_compile.py), `Input` (_Input.py) and `Device` (_Device.py),
and the argument checks those functions make before any TensorRT work:

* `Device._from(torch.device('cuda'))` gives gpu_id=None (all releases); the runtime then fails
  (2.4: a TypeError; 2.5+: the C++ runtime parses the string "None").
* `inputs` and `arg_inputs` together -> AssertionError (2.5+); 2.4 has no `arg_inputs`.
* 2.10 - 2.12: `use_explicit_typing` defaults to True, `enable_autocast=True` forces it, and
  `enabled_precisions` other than {fp32} with explicit typing -> AssertionError.
* 2.13+: `enabled_precisions` and `use_explicit_typing` are gone from the signature; passing them
  lands in **kwargs and is silently ignored, as every unknown keyword is in every release
  (recorded here in `ignored`, so a test can require that nothing is passed in vain).
* `autocast_low_precision_type` must be fp16 or bf16.

Parameters the backend never passes and whose defaults do not matter to it are left out.
Compilation itself is faked: the "engine" runs the exported program on the CPU, wrapped like
Torch-TensorRT's partitioned output (`_run_on_acc_0`, plus `_run_on_gpu_1` when `fallback_ops`),
so outputs are real and checkable.
"""

from __future__ import annotations

import types
from typing import Any

import torch

F32 = {torch.float32}


class Input:
    """`torch_tensorrt.Input(shape)` or `Input(min_shape=, opt_shape=, max_shape=, dtype=)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ranges = ("min_shape", "opt_shape", "max_shape")
        if len(args) == 1:
            if any(k in kwargs for k in ranges):
                raise ValueError("Found that both shape (as a positional argument), and one or "
                                 "more of min_shape, opt_shape, max_shape were specified")
            self.shape = tuple(args[0])
            self.dynamic = False
        elif "shape" in kwargs:
            self.shape, self.dynamic = tuple(kwargs["shape"]), False
        elif all(k in kwargs for k in ranges):
            self.shape = {k: tuple(kwargs[k]) for k in ranges}
            self.dynamic = True
            lo, opt, hi = (self.shape[k] for k in ranges)
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise ValueError(f"min_shape <= opt_shape <= max_shape violated: {self.shape}")
        else:
            raise ValueError("Missing required arguments for class Input\nEither shape or all "
                             "three of min_shape, opt_shape, max_shape must be defined")
        self.dtype = kwargs.get("dtype", torch.float32)


class Device:
    """`torch_tensorrt.Device(gpu_id=0)` / `Device('cuda:0')`; `_from` as in _Device.py."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.gpu_id: Any = -1
        if len(args) == 1:
            if not isinstance(args[0], str):
                raise TypeError("When specifying Device through positional argument, argument "
                                "must be str")
            kind, _, index = args[0].partition(":")
            self.gpu_id = int(index or 0)
        elif "gpu_id" in kwargs:
            self.gpu_id = kwargs["gpu_id"]
        else:
            raise ValueError("Either gpu_id or dla_core or both must be defined if no string "
                             "with device specs is provided as an arg")

    @classmethod
    def _from(cls, d: Any) -> Device:
        if isinstance(d, Device):
            return d
        if isinstance(d, torch.device):
            if d.type != "cuda":
                raise ValueError('Torch Device specs must have type "cuda"')
            return cls(gpu_id=d.index)
        if d is None:
            return cls(gpu_id=0)  # torch.cuda.current_device() on a real machine
        return cls(d)


class FakeEngineModule(torch.nn.Module):
    """What `dynamo.compile` returns: a GraphModule-like wrapper of TensorRT submodules."""

    def __init__(self, program: torch.export.ExportedProgram, fallback: bool):
        super().__init__()
        self.program = program
        self._run_on_acc_0 = program.module()
        if fallback:
            self._run_on_gpu_1 = torch.nn.Identity()

    def forward(self, x):
        return self._run_on_acc_0(x)


class FakeTorchTensorRT(types.ModuleType):
    """A `torch_tensorrt` stand-in; `calls` records every compile / save / load."""

    def __init__(self, version: str, fallback_ops: bool = True):
        super().__init__("torch_tensorrt")
        self.__version__ = version
        self.Input, self.Device = Input, Device
        self.calls: list[tuple[str, dict]] = []
        self.fallback_ops = fallback_ops
        self.dynamo = types.SimpleNamespace(compile=None)

    # shared checks, called by the version-specific signatures below
    def _compile(self, exported_program, inputs, arg_inputs, device, settings, ignored):
        if inputs is not None and arg_inputs is not None:
            raise AssertionError("'arg_inputs' and 'inputs' should not be used at the same "
                                 "time.")
        specs = list(inputs if inputs is not None else arg_inputs)
        for spec in specs:
            if not isinstance(spec, (torch.Tensor, Input)):
                raise TypeError(f"inputs must be torch.Tensor or Input, got {type(spec)}")
        dev = Device._from(device)
        if not isinstance(dev.gpu_id, int):
            raise RuntimeError(f"cannot use GPU {dev.gpu_id!r}: the TensorRT runtime needs a "
                               "device index (got from a torch.device without one)")
        if not isinstance(exported_program, torch.export.ExportedProgram):
            raise TypeError("dynamo.compile takes a torch.export.ExportedProgram")
        self.calls.append(("compile", {"inputs": specs, "device": dev, "settings": settings,
                                       "ignored": ignored}))
        return FakeEngineModule(exported_program, self.fallback_ops)

    def _save(self, module, file_path, output_format, inputs, retrace, kwargs):
        if output_format not in ("exported_program", "torchscript", "aot_inductor"):
            raise ValueError(f"Provided output_format {output_format} is not supported")
        if not file_path:
            raise ValueError("File path cannot be empty. Please provide a valid file path")
        if not retrace and inputs is None and self.__version__.startswith("2.4"):
            raise ValueError("Provided model is a torch.fx.GraphModule however the inputs are "
                             "empty")
        self.calls.append(("save", {"path": file_path, "output_format": output_format,
                                    "inputs": inputs, "retrace": retrace, **kwargs}))
        torch.export.save(module.program, file_path)

    def _load(self, file_path):
        self.calls.append(("load", {"path": file_path}))
        return torch.export.load(file_path)

    def calls_of(self, kind: str) -> list[dict]:
        return [c for k, c in self.calls if k == kind]


def _autocast_check(enable_autocast, autocast_low_precision_type):
    if autocast_low_precision_type is not None and autocast_low_precision_type not in (
            torch.float16, torch.bfloat16):
        raise ValueError("autocast_low_precision_type must be one of torch.float16, "
                         f"torch.bfloat16, got {autocast_low_precision_type}")


def v2_4(fallback_ops: bool = True) -> FakeTorchTensorRT:
    """v2.4.0: `compile(exported_program, inputs, *, device, ...)`; save without arg_inputs."""
    trt = FakeTorchTensorRT("2.4.0", fallback_ops)

    def compile(exported_program, inputs, *, device=None, enabled_precisions=F32,
                workspace_size=0, min_block_size=5, **kwargs):
        return trt._compile(exported_program, inputs, None, device,
                            {"enabled_precisions": set(enabled_precisions),
                             "min_block_size": min_block_size,
                             "workspace_size": workspace_size}, kwargs)

    def save(module, file_path="", *, output_format="exported_program", inputs=None,
             retrace=False):
        trt._save(module, file_path, output_format, inputs, retrace, {})

    def load(file_path=""):
        return trt._load(file_path)

    trt.dynamo.compile, trt.save, trt.load = compile, save, load
    return trt


def v2_9(fallback_ops: bool = True) -> FakeTorchTensorRT:
    """v2.9.0 (2.6 - 2.9): arg_inputs, weak typing (`use_explicit_typing=False`)."""
    trt = FakeTorchTensorRT("2.9.0", fallback_ops)

    def compile(exported_program, inputs=None, *, arg_inputs=None, kwarg_inputs=None,
                device=None, enabled_precisions=F32, workspace_size=0, min_block_size=5,
                use_explicit_typing=False, **kwargs):
        if use_explicit_typing and set(enabled_precisions) != F32:
            raise AssertionError("use_explicit_typing was set to True, however found that "
                                 "enabled_precisions was also specified")
        return trt._compile(exported_program, inputs, arg_inputs, device,
                            {"enabled_precisions": set(enabled_precisions),
                             "use_explicit_typing": use_explicit_typing,
                             "min_block_size": min_block_size,
                             "workspace_size": workspace_size}, kwargs)

    def save(module, file_path="", *, output_format="exported_program", inputs=None,
             arg_inputs=None, kwarg_inputs=None, retrace=False, pickle_protocol=2, **kwargs):
        if arg_inputs and inputs:
            raise AssertionError("'arg_inputs' and 'inputs' should not be used at the same "
                                 "time.")
        trt._save(module, file_path, output_format, inputs or arg_inputs, retrace, kwargs)

    def load(file_path=""):
        return trt._load(file_path)

    trt.dynamo.compile, trt.save, trt.load = compile, save, load
    return trt


def v2_12(fallback_ops: bool = True) -> FakeTorchTensorRT:
    """v2.12.0 (2.10 - 2.12): strong typing by default, rule-based autocast."""
    trt = FakeTorchTensorRT("2.12.0", fallback_ops)

    def compile(exported_program, inputs=None, *, arg_inputs=None, kwarg_inputs=None,
                device=None, enabled_precisions=F32, workspace_size=0, min_block_size=5,
                use_explicit_typing=True, enable_autocast=False,
                autocast_low_precision_type=None, autocast_excluded_nodes=frozenset(),
                autocast_excluded_ops=frozenset(), autocast_max_output_threshold=512,
                autocast_max_depth_of_reduction=None, autocast_calibration_dataloader=None,
                **kwargs):
        if enable_autocast:
            use_explicit_typing = True
        if use_explicit_typing and set(enabled_precisions) != F32:
            raise AssertionError("use_explicit_typing was set to True, however found that "
                                 "enabled_precisions was also specified")
        _autocast_check(enable_autocast, autocast_low_precision_type)
        return trt._compile(exported_program, inputs, arg_inputs, device, {
            "use_explicit_typing": use_explicit_typing, "enable_autocast": enable_autocast,
            "autocast_low_precision_type": autocast_low_precision_type,
            "autocast_excluded_ops": set(autocast_excluded_ops),
            "autocast_calibration_dataloader": autocast_calibration_dataloader,
            "min_block_size": min_block_size, "workspace_size": workspace_size}, kwargs)

    def save(module, file_path="", *, extra_files=None, output_format="exported_program",
             inputs=None, arg_inputs=None, kwarg_inputs=None, retrace=True,
             use_legacy_exporter=None, pickle_protocol=2, dynamic_shapes=None, **kwargs):
        if arg_inputs and inputs:
            raise AssertionError("'arg_inputs' and 'inputs' should not be used at the same "
                                 "time.")
        trt._save(module, file_path, output_format, inputs or arg_inputs, retrace, kwargs)

    def load(file_path="", extra_files: dict | None = None, **kwargs):
        return trt._load(file_path)

    trt.dynamo.compile, trt.save, trt.load = compile, save, load
    return trt


def v2_13(fallback_ops: bool = True) -> FakeTorchTensorRT:
    """v2.13.0 (and main, 2.14.0a0): `enabled_precisions` / `use_explicit_typing` removed."""
    trt = FakeTorchTensorRT("2.13.0", fallback_ops)

    def compile(exported_program, inputs=None, *, arg_inputs=None, kwarg_inputs=None,
                device=None, workspace_size=0, min_block_size=5, enable_autocast=False,
                autocast_low_precision_type=None, autocast_excluded_nodes=frozenset(),
                autocast_excluded_ops=frozenset(), autocast_max_output_threshold=512,
                autocast_max_depth_of_reduction=None, autocast_calibration_dataloader=None,
                **kwargs):
        _autocast_check(enable_autocast, autocast_low_precision_type)
        return trt._compile(exported_program, inputs, arg_inputs, device, {
            "enable_autocast": enable_autocast,
            "autocast_low_precision_type": autocast_low_precision_type,
            "autocast_excluded_ops": set(autocast_excluded_ops),
            "autocast_calibration_dataloader": autocast_calibration_dataloader,
            "min_block_size": min_block_size, "workspace_size": workspace_size}, kwargs)

    def save(module, file_path="", *, extra_files=None, output_format="exported_program",
             inputs=None, arg_inputs=None, kwarg_inputs=None, retrace=True,
             use_legacy_exporter=None, pickle_protocol=2, dynamic_shapes=None, **kwargs):
        if arg_inputs and inputs:
            raise AssertionError("'arg_inputs' and 'inputs' should not be used at the same "
                                 "time.")
        trt._save(module, file_path, output_format, inputs or arg_inputs, retrace, kwargs)

    def load(file_path="", extra_files: dict | None = None, **kwargs):
        return trt._load(file_path)

    trt.dynamo.compile, trt.save, trt.load = compile, save, load
    return trt


RELEASES = {"2.4": v2_4, "2.9": v2_9, "2.12": v2_12, "2.13": v2_13}
