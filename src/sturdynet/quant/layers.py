"""Drop-in quantized layers (brevitas style): subclasses of nn.Conv2d / nn.Linear that
only change the inner op to use quantized weights (and optionally quantized inputs).

The forward pass is the deployed arithmetic (quantized weights times quantized
inputs, in float); the backward pass is each quantizer's named gradient estimator,
switched for the whole model with :func:`sturdynet.quant.gradient_mode`. A layer tells
storage accounting and packed export how its tensors are stored through
``storage_bits(param)`` and ``quantizer_for(param)``."""
from __future__ import annotations

import copy
from typing import Callable, List, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn


class _QuantMixin:
    weight_quantizer: Optional[nn.Module]
    act_quantizer: Optional[nn.Module]

    def _init_quant(self, weight_quantizer: Optional[nn.Module], act_quantizer: Optional[nn.Module]) -> None:
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer

    def qweight(self) -> Tensor:
        """The deployed weight tensor."""
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def qinput(self, x: Tensor) -> Tensor:
        return x if self.act_quantizer is None else self.act_quantizer(x)

    def quantizer_for(self, param: str) -> Optional[nn.Module]:
        """The quantizer that stores ``param`` (None: stored as a float tensor)."""
        return self.weight_quantizer if param == "weight" else None

    def storage_bits(self, param: str) -> Optional[int]:
        """Bits per stored element of ``param`` (None: the float default)."""
        q = self.quantizer_for(param)
        return int(q.bits) if q is not None else None


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """nn.Conv2d with a weight quantizer and an optional input (activation) quantizer."""

    def __init__(self, *args, weight_quantizer: Optional[nn.Module] = None,
                 act_quantizer: Optional[nn.Module] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(weight_quantizer, act_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.qinput(x), self.qweight(), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    """nn.Linear with a weight quantizer and an optional input (activation) quantizer."""

    def __init__(self, *args, weight_quantizer: Optional[nn.Module] = None,
                 act_quantizer: Optional[nn.Module] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(weight_quantizer, act_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.qinput(x), self.qweight(), self.bias)


def _quant_copy(layer: nn.Module, wq: Optional[nn.Module], aq: Optional[nn.Module]) -> nn.Module:
    if isinstance(layer, nn.Conv2d):
        new = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                          bias=layer.bias is not None, padding_mode=layer.padding_mode,
                          weight_quantizer=wq, act_quantizer=aq)
    else:
        new = QuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                          weight_quantizer=wq, act_quantizer=aq)
    new.to(layer.weight.device)
    # Keep parameters and buffers (masks included) of the float layer.
    for name, p in layer._parameters.items():
        new._parameters[name] = p
    for name, b in layer._buffers.items():
        new._buffers[name] = b
    new.train(layer.training)
    return new


def quantizable(model: nn.Module, skip_first: bool = True, skip_last: bool = True) -> List[Tuple[str, nn.Module]]:
    """(name, layer) of the float Conv2d / Linear layers :func:`convert` would replace."""
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, (QuantConv2d, QuantLinear))]
    if skip_first and targets:
        targets = targets[1:]
    if skip_last and targets:
        targets = targets[:-1]
    return targets


def convert(model: nn.Module, make_weight_quantizer: Callable[[nn.Module], Optional[nn.Module]],
            make_act_quantizer: Optional[Callable[[nn.Module], Optional[nn.Module]]] = None,
            skip_first: bool = True, skip_last: bool = True) -> nn.Module:
    """Replace (in place) every nn.Conv2d / nn.Linear by its quantized twin.

    Args:
        make_weight_quantizer: called with the float layer, returns its weight quantizer.
        make_act_quantizer: same for the input quantizer (None: inputs stay float).
        skip_first, skip_last: keep the first conv/linear and the last one in float,
            as the standard low-bit recipes do.
    Returns:
        ``model`` itself, converted.
    """
    for name, layer in quantizable(model, skip_first, skip_last):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wq = make_weight_quantizer(layer)
        aq = make_act_quantizer(layer) if make_act_quantizer else None
        if wq is not None:
            wq.to(layer.weight.device)
        if aq is not None:
            aq.to(layer.weight.device)
        setattr(parent, child, _quant_copy(layer, wq, aq))
    return model


def converted_copy(model: nn.Module, make_weight_quantizer: Callable[[nn.Module], Optional[nn.Module]],
                   make_act_quantizer: Optional[Callable[[nn.Module], Optional[nn.Module]]] = None,
                   quantize_first: bool = False, quantize_last: bool = False) -> nn.Module:
    """:func:`convert` on a deep copy of ``model`` (the caller's model is untouched), with the
    quantization methods' ``quantize_first`` / ``quantize_last`` parameters (by default the
    first conv/linear and the last one stay float)."""
    return convert(copy.deepcopy(model), make_weight_quantizer, make_act_quantizer,
                   skip_first=not quantize_first, skip_last=not quantize_last)
