"""A Hugging Face causal LM as a decoupled (streaming) Triton Python-backend model.

The model repository's generated ``model.py`` (servers/triton/repository.py) puts this
repository and the packages of the launching Python on ``sys.path`` and re-exports
``TritonPythonModel`` from here. The batched decoding is the PyTorch server's engine
(servers/pytorch/engine.py), so both runtimes compute exactly the same tokens.

Tensors (``max_batch_size`` > 0, so each request is a batch of one: shapes [1, 1]):

    inputs   text_input    BYTES  the prompt, or with chat=true a JSON list of messages
             max_tokens    INT32  optional, default 16
             min_tokens    INT32  optional, EOS is masked until this many tokens exist
             ignore_eos    BOOL   optional
             chat          BOOL   optional: apply the tokenizer's chat template
    outputs  text_output   BYTES  the text of this response's token (may be empty while a
                                  UTF-8 character is incomplete)
             output_tokens INT32  tokens generated so far (cumulative)
             input_tokens  INT32  prompt tokens
             finish_reason BYTES  "" until the last response: "length", "stop" or "abort"

One response per generated token; the last one carries the final flag. Batching, chosen by
the ``batching`` parameter:

- ``dynamic`` (Triton's): the dynamic batcher hands ``execute`` up to ``max_batch_size``
  requests that are queued when the instance is free; they are decoded together as one static
  batch until the last finishes, while newer requests wait in Triton's queue (or go to another
  instance: ``instance_group.count``). This is how Triton batches a model that has no
  in-flight batching of its own.
- ``continuous``: ``execute`` hands the requests to the engine's own thread and returns at
  once; the engine admits them into free slots before every decode step (in-flight batching,
  as the vLLM and TensorRT-LLM backends do), so one instance serves many streams.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton: unit tests import the pure parts
    pb_utils = None

DEFAULT_MAX_TOKENS = 16
CANCEL_CHECK_EVERY = 8  # tokens between is_cancelled() checks (each is an IPC round trip)


def _param(config: dict[str, Any], key: str, default: str = "") -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _scalar(request: Any, name: str, default: Any) -> Any:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return default
    return t.as_numpy().reshape(-1)[0]


@dataclass
class _Stream:
    """One request's response sender and how much of its output has been sent."""

    sender: Any
    request: Any
    detok: Any
    input_tokens: int
    sent: int = 0
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from servers.pytorch.app import Detokenizer
        from servers.pytorch.engine import Engine, Sequence

        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("this model must be decoupled (streaming)")
        self.batching = _param(config, "batching", "dynamic")
        if self.batching not in ("dynamic", "continuous"):
            raise pb_utils.TritonModelException(
                f"parameter batching must be dynamic or continuous, got {self.batching!r}")
        threads = int(_param(config, "threads", "1"))
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        model_dir = _param(config, "hf_model")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                     dtype=torch.float32).eval()
        eos = model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        self.max_len = int(getattr(model.config, "max_position_embeddings", 2048))
        self.Detokenizer, self.Sequence = Detokenizer, Sequence
        self.streams: dict[int, _Stream] = {}
        self.number = 0
        self.engine = Engine(model, eos_ids, max_batch=max(1, int(config["max_batch_size"])),
                             batching="static" if self.batching == "dynamic" else "continuous",
                             threads=threads, notify=self._notify)
        self.engine.warmup(self.tokenizer.bos_token_id or 0)
        self.torch = torch
        if self.batching == "continuous":
            self.engine.start()

    # -- requests in ---------------------------------------------------------------------

    def _sequence(self, request: Any) -> Any:
        """A validated engine Sequence for ``request`` (ValueError says what is wrong)."""
        text = _scalar(request, "text_input", None)
        if text is None:
            raise ValueError("input text_input is required")
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        max_tokens = int(_scalar(request, "max_tokens", DEFAULT_MAX_TOKENS))
        min_tokens = int(_scalar(request, "min_tokens", 0))
        if max_tokens < 1 or min_tokens < 0 or min_tokens > max_tokens:
            raise ValueError(f"need 1 <= max_tokens and 0 <= min_tokens <= max_tokens, got "
                             f"max_tokens={max_tokens}, min_tokens={min_tokens}")
        if bool(_scalar(request, "chat", False)):
            messages = json.loads(text)
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                        add_generation_prompt=True)
            ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer(text).input_ids
        if not ids:
            raise ValueError("the prompt is empty after tokenization")
        if len(ids) + max_tokens > self.max_len:
            raise ValueError(f"the prompt has {len(ids)} tokens and max_tokens is {max_tokens}; "
                             f"the model's maximum context is {self.max_len}")
        self.number += 1
        return self.Sequence(self.number, ids, max_tokens, min_tokens=min_tokens,
                             ignore_eos=bool(_scalar(request, "ignore_eos", False)))

    def execute(self, requests: list[Any]) -> None:
        seqs = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                seq = self._sequence(request)
            except (ValueError, TypeError) as e:  # json errors are ValueErrors
                sender.send(pb_utils.InferenceResponse(output_tensors=[],
                                                       error=pb_utils.TritonError(str(e))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            self.streams[seq.number] = _Stream(sender, request, self.Detokenizer(self.tokenizer),
                                               len(seq.prompt_ids))
            seqs.append(seq)
            self.engine.submit(seq)
        if self.batching == "dynamic" and seqs:
            with self.torch.inference_mode():
                while any(s.finish_reason is None for s in seqs):
                    self.engine.iterate()
        return None

    # -- responses out -------------------------------------------------------------------

    def _notify(self, seqs: list[Any]) -> None:
        for seq in seqs:
            st = self.streams.get(seq.number)
            if st is None:
                continue
            with st.lock:
                self._send(seq, st)

    def _send(self, seq: Any, st: _Stream) -> None:
        """Send one response per token not sent yet; the final flag goes on the last one, or
        on an empty response when the sequence ended without a new token (aborted)."""
        if st.closed:
            return
        finish = seq.finish_reason  # read before the tokens: they are appended first
        end = len(seq.output_ids)
        final_sent = False
        for k in range(st.sent, end):
            last = finish is not None and k == end - 1
            text = st.detok.push(seq.output_ids[k])
            resp = self._response(text, k + 1, st.input_tokens, finish if last else "")
            st.sender.send(resp, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if last
                           else 0)
            final_sent = last
            if (k + 1) % CANCEL_CHECK_EVERY == 0 and not last and st.request.is_cancelled():
                self.engine.abort(seq)
        st.sent = end
        if finish is not None:
            if not final_sent:
                st.sender.send(self._response("", end, st.input_tokens, finish),
                               flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            st.closed = True
            self.streams.pop(seq.number, None)

    @staticmethod
    def _response(text: str, output_tokens: int, input_tokens: int, finish: str) -> Any:
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("text_output", np.array([[text.encode()]], dtype=np.object_)),
            pb_utils.Tensor("output_tokens", np.array([[output_tokens]], dtype=np.int32)),
            pb_utils.Tensor("input_tokens", np.array([[input_tokens]], dtype=np.int32)),
            pb_utils.Tensor("finish_reason", np.array([[finish.encode()]], dtype=np.object_)),
        ])

    def finalize(self) -> None:
        if self.batching == "continuous":
            self.engine.stop()
