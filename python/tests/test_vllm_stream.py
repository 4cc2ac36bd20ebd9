"""The vLLM plugin's device choice, direct targets and checkpoint stream, on the CPU over a real libtorpor (no vLLM
server: torpor_vllm.placement and torpor_vllm.stream import only torch and torpor).

- with every parameter on ``meta`` (vLLM's layer-wise reload) the checkpoint goes to the worker's current CUDA
  device, or the CPU where there is none;
- only tensors that a plain copy would load go straight into their parameters;
- the stream yields every tensor exactly, in checkpoint order, in bounded groups, and a bad chunk ends it with an
  error naming the checkpoint, tensor and chunk; a bad path fails before anything is decoded.
"""

import os
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch
import torch.nn as nn

import torpor
from torpor._torch import TO_TORCH
from torpor_vllm.placement import direct_targets, target_device
from torpor_vllm.stream import CheckpointLoadError, CheckpointStream


def meta_model() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))


class DeviceChoice(unittest.TestCase):
    def test_real_parameters_name_the_device(self):
        self.assertEqual(target_device(nn.Linear(4, 4)), torch.device("cpu"))

    def test_parameters_on_meta_take_the_current_cuda_device(self):
        with mock.patch.object(torch.cuda, "is_available", return_value=True), \
                mock.patch.object(torch.cuda, "current_device", return_value=3), \
                mock.patch.dict(os.environ, {}, clear=False):
            os.environ.pop("TORPOR_VLLM_DEVICE", None)
            self.assertEqual(target_device(meta_model()), torch.device("cuda", 3))

    def test_parameters_on_meta_without_a_gpu_take_the_cpu(self):
        with mock.patch.object(torch.cuda, "is_available", return_value=False):
            os.environ.pop("TORPOR_VLLM_DEVICE", None)
            self.assertEqual(target_device(meta_model()), torch.device("cpu"))

    def test_the_environment_overrides_only_the_guess(self):
        with mock.patch.dict(os.environ, {"TORPOR_VLLM_DEVICE": "cuda:1"}):
            self.assertEqual(target_device(meta_model()), torch.device("cuda", 1))
            self.assertEqual(target_device(nn.Linear(4, 4)), torch.device("cpu"))


class Entry:
    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, dtype, shape


class DirectTargets(unittest.TestCase):
    def test_only_plain_copies_of_the_same_shape_and_dtype(self):
        model = nn.Module()
        model.plain = nn.Parameter(torch.zeros(4, 4), requires_grad=False)
        model.merged = nn.Parameter(torch.zeros(12, 4), requires_grad=False)

        def fused_loader(param, loaded_weight, shard_id):  # like QKVParallelLinear's
            raise AssertionError("not called")

        model.merged.weight_loader = fused_loader
        model.wrong_dtype = nn.Parameter(torch.zeros(4, 4, dtype=torch.bfloat16), requires_grad=False)
        model.padded = nn.Parameter(torch.zeros(8, 4), requires_grad=False)
        entries = [Entry("plain", "F32", (4, 4)), Entry("merged", "F32", (12, 4)), Entry("wrong_dtype", "F32", (4, 4)),
                   Entry("padded", "F32", (6, 4)), Entry("absent", "F32", (4, 4))]
        targets = direct_targets(model, entries, TO_TORCH)
        self.assertEqual(set(targets), {"plain"})
        self.assertEqual(targets["plain"].data_ptr(), model.plain.data_ptr())

    def test_nothing_on_meta(self):
        entries = [Entry("0.weight", "F32", (8, 8))]
        self.assertEqual(direct_targets(meta_model(), entries, TO_TORCH), {})


class Stream(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="torpor-stream-"))
        generator = torch.Generator().manual_seed(3)
        self.state = {f"layers.{n}.weight": (torch.randn(64, 256, generator=generator) * 0.02).to(torch.bfloat16)
                      for n in range(6)}
        self.state["norm.weight"] = torch.ones(256)
        self.path = self.directory / "model.torpor"
        torpor.save(self.state, self.path, codec="byteplane", background=False)

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def stream(self, path=None, group_bytes=1 << 20):
        return CheckpointStream(str(path or self.path), torch.device("cpu"), source="file", cache_dir=None,
                                group_bytes=group_bytes, threads=1)

    def test_every_tensor_exactly_in_checkpoint_order_in_small_groups(self):
        stream = self.stream(group_bytes=64 * 256 * 2 * 2)  # one 32 KiB tensor a group
        try:
            self.assertEqual(len(stream._groups(stream.containers[0])), 7)
            seen = list(stream)
        finally:
            stream.close()
        self.assertEqual([name for name, _ in seen], list(self.state))
        for name, tensor in seen:
            self.assertTrue(torch.equal(tensor, self.state[name]), name)

    def test_direct_tensors_are_decoded_in_place_and_left_out(self):
        stream = self.stream()
        target = torch.empty(256)
        try:
            self.assertEqual(stream.direct({"norm.weight": target}), 256 * 4)
            names = [name for name, _ in stream]
        finally:
            stream.close()
        self.assertTrue(torch.equal(target, self.state["norm.weight"]))
        self.assertNotIn("norm.weight", names)
        self.assertEqual(len(names), 6)

    def test_a_bad_chunk_ends_the_stream_naming_it(self):
        data = bytearray(self.path.read_bytes())
        data[4096 + 3000] ^= 0x20  # inside the first tensor's chunk
        self.path.write_bytes(bytes(data))
        stream = self.stream()
        with self.assertRaises(CheckpointLoadError) as raised:
            list(stream)
        stream.close()
        message = str(raised.exception)
        self.assertIn(f"loading the Torpor checkpoint {self.path} failed", message)
        self.assertIn('tensor "layers.0.weight" chunk 0', message)

    def test_a_missing_checkpoint_fails_before_anything_decodes(self):
        with self.assertRaises(CheckpointLoadError) as raised:
            self.stream(self.directory / "nowhere")
        self.assertIn("cannot be opened", str(raised.exception))
        self.assertIn("nowhere does not exist", str(raised.exception))

    def test_a_consumer_that_stops_early_ends_the_decoding_thread(self):
        stream = self.stream(group_bytes=64 * 256 * 2 * 2)
        iterator = iter(stream)
        next(iterator)
        iterator.close()
        stream.close()
        self.assertFalse(any(thread.name == "torpor-decode" and thread.is_alive()
                             for thread in __import__("threading").enumerate()))


if __name__ == "__main__":
    unittest.main()
