"""Tests of the torpor Python package over a real libtorpor (TORPOR_LIBRARY) and the real torpor command
(TORPOR_BINARY, for packs made the way users make them). Run by scripts/test.sh:

    TORPOR_LIBRARY=.build/debug/libtorpor-c.so TORPOR_BINARY=.build/debug/torpor python -m unittest discover python/tests
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
from pathlib import Path

import torch

import torpor
from torpor._torch import TO_TORCH

REPOSITORY = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("TORPOR_FIXTURES", REPOSITORY.parent / "shared" / "fixtures"))
BINARY = os.environ.get("TORPOR_BINARY", str(REPOSITORY / ".build" / "debug" / "torpor"))


def sample(dtype: torch.dtype, shape, seed: int) -> torch.Tensor:
    """Deterministic values of every kind a dtype holds, built through its bytes."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_floating_point and dtype.itemsize >= 2:
        return (torch.randn(shape, generator=generator) * 0.02).to(dtype)
    count = 1
    for size in shape:
        count *= size
    raw = torch.randint(0, 256, (count * dtype.itemsize,), dtype=torch.uint8, generator=generator)
    return raw.view(dtype).reshape(shape)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN payloads included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    as_bytes = lambda t: bytes(t.contiguous().reshape(-1).view(torch.uint8).numpy())  # noqa: E731
    return as_bytes(a) == as_bytes(b)


class RoundTrips(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="torpor-python-"))

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def test_every_dtype_with_every_cpu_codec(self):
        state = {}
        for number, (name, dtype) in enumerate(sorted(TO_TORCH.items())):
            state[f"t.{name}"] = sample(dtype, (3, 1000 + number), seed=number)
            state[f"scalar.{name}"] = sample(dtype, (), seed=100 + number)
            state[f"empty.{name}"] = torch.empty((0, 4), dtype=dtype)
        state["strided"] = torch.arange(64, dtype=torch.float32).reshape(8, 8).t()  # not contiguous
        for codec in ("auto", "byteplane", "zstd", "raw"):
            path = self.directory / f"{codec}.torpor"
            handle = torpor.save(state, path, codec=codec, background=False,
                                 metadata={"step": "7", "codec": codec})
            self.assertTrue(handle.done())
            self.assertGreater(handle.source_bytes, 0)
            self.assertEqual(handle.container_bytes, path.stat().st_size)
            loaded = torpor.load(path)
            self.assertEqual(set(loaded), set(state))
            for name, tensor in state.items():
                self.assertTrue(same(loaded[name], tensor), f"{codec}: {name}")
            with torpor.open(path) as container:
                self.assertEqual(container.metadata, {"step": "7", "codec": codec})
                self.assertEqual(container.tensors["t.BF16"].shape, (3, 1000 + sorted(TO_TORCH).index("BF16")))
        # 16-bit floats compress: the auto container is smaller than the raw one.
        self.assertLess((self.directory / "auto.torpor").stat().st_size, (self.directory / "raw.torpor").stat().st_size)

    def test_a_saved_container_is_a_pack_the_command_reads(self):
        state = {"w": sample(torch.bfloat16, (64, 256), seed=1), "b": sample(torch.float32, (256,), seed=2)}
        path = self.directory / "model.torpor"
        torpor.save(state, path, background=False)
        verified = subprocess.run([BINARY, "inspect", str(path)], capture_output=True, text=True)
        self.assertEqual(verified.returncode, 0, verified.stderr)
        self.assertIn("w", verified.stdout)

    def test_packs_made_by_the_command_load_like_safetensors(self):
        from safetensors.torch import load_file

        model = FIXTURES / "tiny-llama"
        pack = self.directory / "pack"
        made = subprocess.run([BINARY, "pack", "-q", str(model), str(pack)], capture_output=True, text=True)
        self.assertEqual(made.returncode, 0, made.stderr)
        loaded = torpor.load(pack)
        expected = {}
        for file in sorted(model.glob("*.safetensors")):
            expected.update(load_file(str(file)))
        self.assertEqual(set(loaded), set(expected))
        for name in expected:
            self.assertTrue(same(loaded[name], expected[name]), name)
        some = sorted(expected)[:2]
        self.assertEqual(set(torpor.load(pack, names=some)), set(some))
        # From the host cache: a copy of each container in RAM, made on first use, then read from there.
        cache = self.directory / "cache"
        cache.mkdir()
        cached = torpor.load(pack, source="host-cache", cache_dir=str(cache))
        self.assertTrue(all(same(cached[name], expected[name]) for name in expected))
        copies = list(cache.iterdir())
        self.assertEqual(len(copies), 1)
        self.assertEqual(copies[0].read_bytes(), (pack / "model.torpor").read_bytes())
        self.assertEqual(torpor.prepare_host_cache(pack, str(cache)), [str(copies[0])])


class WithoutPyTorch(unittest.TestCase):
    def test_the_package_imports_and_reads_without_torch(self):
        directory = Path(tempfile.mkdtemp(prefix="torpor-python-"))
        try:
            path = directory / "model.torpor"
            torpor.save({"w": torch.arange(6, dtype=torch.int32)}, path, background=False)
            script = (
                "import sys; sys.modules['torch'] = None\n"  # as if PyTorch were not installed
                "import torpor\n"
                f"container = torpor.open({str(path)!r})\n"
                "print(list(container.tensors), container.read_bytes('w').hex())\n"
                "try:\n"
                f"    torpor.load({str(path)!r})\n"
                "except ImportError as error:\n"
                "    print('ImportError:', error)\n"
            )
            run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                 cwd=str(REPOSITORY / "python"))
            self.assertEqual(run.returncode, 0, run.stderr)
            lines = run.stdout.splitlines()
            self.assertEqual(lines[0], "['w'] " + b"".join(i.to_bytes(4, "little") for i in range(6)).hex())
            self.assertIn("torpor.load and torpor.save need PyTorch", lines[1])
        finally:
            shutil.rmtree(directory, ignore_errors=True)


class BackgroundSaves(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="torpor-python-"))

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def test_bytes_are_captured_before_save_returns(self):
        weights = {"w": sample(torch.bfloat16, (512, 1024), seed=3)}
        handles, snapshots = [], []
        for step in range(4):
            snapshots.append(weights["w"].clone())
            handles.append(torpor.save(weights, self.directory / f"step-{step}.torpor"))
            weights["w"].mul_(1.5).add_(1.0)  # the next "training step" changes the weights at once
        for step, handle in enumerate(handles):
            handle.wait()
            self.assertTrue(same(torpor.load(handle.path)["w"], snapshots[step]), f"step {step}")
        self.assertFalse(same(snapshots[0], snapshots[1]))

    def test_memory_is_kept_for_the_next_save_and_released_on_request(self):
        torpor.release_save_memory()  # what earlier tests kept
        weights = {"w": sample(torch.bfloat16, (512, 1024), seed=5)}
        first = torpor.save(weights, self.directory / "a.torpor")
        self.assertEqual(first.capture["capture"], "host")
        self.assertFalse(first.capture["memory_reused"])
        first.wait()
        weights["w"].mul_(-2.0)
        # Reused memory holds the last file's bytes: a different header (metadata) moves every tensor.
        second = torpor.save(weights, self.directory / "b.torpor", metadata={"step": "2" * 100})
        self.assertTrue(second.capture["memory_reused"])
        second.wait()
        with torpor.open(second.path) as container:
            self.assertEqual(container.metadata["step"], "2" * 100)
        self.assertTrue(same(torpor.load(second.path)["w"], weights["w"]))
        bigger = torpor.save({"w": sample(torch.bfloat16, (1024, 1024), seed=6)}, self.directory / "c.torpor")
        self.assertFalse(bigger.capture["memory_reused"])  # the kept memory is too small: new memory, the old freed
        bigger.wait()
        self.assertGreaterEqual(torpor.release_save_memory(), 1024 * 1024 * 2)
        self.assertEqual(torpor.release_save_memory(), 0)
        torpor.save(weights, self.directory / "d.torpor", keep_memory=False).wait()
        self.assertEqual(torpor.release_save_memory(), 0)

    def test_saves_from_several_threads(self):
        errors = []

        def work(number):
            try:
                state = {f"x{number}": sample(torch.float16, (256, 256), seed=number)}
                torpor.save(state, self.directory / f"thread-{number}.torpor").wait()
                self.assertTrue(same(torpor.load(self.directory / f"thread-{number}.torpor")[f"x{number}"],
                                     state[f"x{number}"]))
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(number,)) for number in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])

    def test_a_failing_background_save_raises_on_wait_and_leaves_no_file(self):
        target = self.directory / "missing-directory" / "model.torpor"
        handle = torpor.save({"w": torch.ones(4)}, target)
        with self.assertRaises(torpor.TorporError) as raised:
            handle.wait()
        self.assertEqual(raised.exception.reason, "I/O error")
        self.assertIn("missing-directory", str(raised.exception))
        self.assertFalse(target.exists())


class Errors(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="torpor-python-"))

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def test_errors_carry_the_librarys_message(self):
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.open(self.directory / "nowhere.torpor")
        self.assertEqual(raised.exception.reason, "I/O error")
        self.assertIn("nowhere.torpor", str(raised.exception))

        not_a_container = self.directory / "text.torpor"
        not_a_container.write_bytes(b"hello" * 100)
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.open(not_a_container)
        self.assertEqual(raised.exception.reason, "invalid container")

        path = self.directory / "model.torpor"
        torpor.save({"w": sample(torch.bfloat16, (256, 4096), seed=5)}, path, codec="byteplane", background=False)
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.load(path, names=["v"])
        self.assertIn("no tensor named 'v'", str(raised.exception))

        data = bytearray(path.read_bytes())
        data[4096 + 5000] ^= 0x20  # inside the first chunk
        path.write_bytes(bytes(data))
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.load(path)
        self.assertEqual(raised.exception.reason, "corrupt data")
        self.assertIn('tensor "w" chunk 0', str(raised.exception))
        self.assertIn("CRC-32", str(raised.exception))

    def test_bad_save_arguments(self):
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.save({"w": torch.ones(2)}, self.directory / "a.torpor", codec="lz4")
        self.assertIn('unknown codec "lz4"', str(raised.exception))
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.save({"w": [1, 2]}, self.directory / "b.torpor")
        self.assertIn("not a torch.Tensor", str(raised.exception))
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.save({"": torch.ones(2)}, self.directory / "c.torpor")
        self.assertIn("may be neither empty", str(raised.exception))
        with self.assertRaises(torpor.TorporError) as raised:
            torpor.save({"w": torch.ones(2)}, self.directory / "d.torpor", codec="ans16", gpu_encode=False)
        self.assertIn("ans16", str(raised.exception))
        self.assertEqual(list(self.directory.iterdir()), [])

    def test_a_host_cache_directory_that_is_missing_is_made(self):
        path = self.directory / "model.torpor"
        torpor.save({"w": sample(torch.bfloat16, (64, 64), seed=2)}, path, background=False)
        cache_dir = self.directory / "not" / "yet"
        caches = torpor.prepare_host_cache(path, str(cache_dir))
        self.assertEqual(len(caches), 1)
        self.assertEqual(Path(caches[0]).parent, cache_dir)
        self.assertEqual(Path(caches[0]).read_bytes(), path.read_bytes())
        self.assertEqual(list(cache_dir.iterdir()), [Path(caches[0])], "no partial file is left")

    @unittest.skipIf(torch.cuda.is_available(), "this machine has a GPU (the GPU script tests loads there)")
    def test_a_gpu_load_without_a_gpu_says_so(self):
        path = self.directory / "model.torpor"
        torpor.save({"w": torch.ones(16)}, path, background=False)
        with torpor.open(path) as container:
            with self.assertRaises(torpor.TorporError) as raised:
                container.load_into_device({"w": 1 << 20}, device=0)
        self.assertEqual(raised.exception.reason, "no GPU")


if __name__ == "__main__":
    unittest.main()
