"""A small MLServer inference runtime that serves an ONNX model with ONNX Runtime.

MLServer ships no ONNX runtime of its own, so the benchmark gives it this one: the same model
file mlplat serves, the same session settings (one intra-op thread, no spinning), inputs and
outputs through MLServer's own ``NumpyCodec`` (what its built-in runtimes use, and what its
adaptive batching concatenates and splits). Loaded by MLServer from ``model-settings.json``
(``"implementation": "runtime.OnnxRuntimeModel"``, ``parameters.uri`` = the .onnx file); it runs
in MLServer's own virtualenv (``bench/.venv-mlserver``, see ``setup.sh``), not the project's.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        uri = await get_model_uri(self._settings)
        self._session = ort.InferenceSession(uri, sess_options=opts, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        results = self._session.run(self._outputs, feed)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self._outputs, results, strict=True)],
        )
