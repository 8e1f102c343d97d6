"""int8 post-training quantization.

Modules, one job each (read in this order):

- ``scheme``      the int8 conventions: activation / weight / bias parameters
- ``observers``   minmax, percentile, entropy (KL) range observers
- ``onnx_graph``  prepare the float ONNX graph (fold BN, opset 13) and find layers
- ``calibrate``   run the float graph on calibration feeds into the observers
- ``qdq``         write the QDQ ONNX model (the carrier of all parameters)
- ``accuracy``    cosine / SNR / max error, accuracy budgets
- ``ptq``         prepare -> calibrate -> QDQ -> measure, sensitivity, budget search
- ``lower``       the ``quantize-int8`` Relax pass: QDQ layers -> integer kernels
- ``requant``     numpy reference of those integer kernels

Importing this package registers the ``quantize-int8`` pass.
"""

from edgec.passes.quantize import lower  # noqa: F401  (registers quantize-int8)
