"""A non-LLM Triton Python-backend model: a 3x3 box blur of an RGB image (numpy only).

It stands for the image models (segmentation, depth, pose) that are measured with the same
request/reply interface: the work and the bytes moved grow with the image, so latency is
conditioned on payload size. Tensors (``max_batch_size: 0``; any height and width):

    input   image  UINT8  [H, W, 3]
    output  image  UINT8  [H, W, 3]   out[y, x] = mean of in[y-1..y+1, x-1..x+1] (edges
                                      repeat the border pixel)

The blur is nine shifted adds of the edge-padded image in float32, so its cost is about
9 x H x W x 3 additions: linear in the number of pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton: unit tests import the pure parts
    pb_utils = None


def box_blur(image: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge padding; ``image`` is [H, W, C] uint8."""
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {list(image.shape)}")
    h, w = image.shape[:2]
    p = np.pad(image.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    acc = np.zeros(image.shape, dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            acc += p[dy:dy + h, dx:dx + w]
    return np.rint(acc / 9.0).astype(np.uint8)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        pass

    def execute(self, requests: list[Any]) -> list[Any]:
        out = []
        for request in requests:
            try:
                image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
                out.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("image", box_blur(image))]))
            except ValueError as e:
                out.append(pb_utils.InferenceResponse(output_tensors=[],
                                                      error=pb_utils.TritonError(str(e))))
        return out
