"""Batch normalization with quantized affine parameters and an optional output quantizer.

Used by fixed-point quantization (arXiv 2401.17544), which also moves the element-wise
layers of a network to fixed point: ``gamma`` and ``beta`` are stored and used
quantized (``weight_quantizer``, ``bias_quantizer``) and the normalized output can be
quantized (``out_quantizer``). Running statistics stay float32 (they are counted as
such by storage accounting and export).
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


class QuantBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose ``weight``/``bias`` pass through quantizers, output optionally too."""

    def __init__(self, *args, weight_quantizer: Optional[nn.Module] = None,
                 bias_quantizer: Optional[nn.Module] = None, out_quantizer: Optional[nn.Module] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_quantizer = weight_quantizer
        self.bias_quantizer = bias_quantizer
        self.out_quantizer = out_quantizer

    def quantizer_for(self, param: str) -> Optional[nn.Module]:
        """The quantizer that stores ``param`` (None: stored as float)."""
        return {"weight": self.weight_quantizer, "bias": self.bias_quantizer}.get(param)

    def storage_bits(self, param: str) -> Optional[int]:
        q = self.quantizer_for(param)
        return int(q.bits) if q is not None else None

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        w = self.weight if self.weight_quantizer is None or self.weight is None else self.weight_quantizer(self.weight)
        b = self.bias if self.bias_quantizer is None or self.bias is None else self.bias_quantizer(self.bias)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        y = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         w, b, use_batch, momentum, self.eps)
        return y if self.out_quantizer is None else self.out_quantizer(y)


def quant_bn_copy(bn: nn.BatchNorm2d, wq: Optional[nn.Module], bq: Optional[nn.Module],
                  oq: Optional[nn.Module]) -> QuantBatchNorm2d:
    """A QuantBatchNorm2d sharing ``bn``'s parameters and buffers."""
    new = QuantBatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                           track_running_stats=bn.track_running_stats,
                           weight_quantizer=wq, bias_quantizer=bq, out_quantizer=oq)
    dev = bn.weight.device if bn.weight is not None else None
    if dev is not None:
        new.to(dev)
    for name, p in bn._parameters.items():
        new._parameters[name] = p
    for name, b in bn._buffers.items():
        new._buffers[name] = b
    new.train(bn.training)
    return new
