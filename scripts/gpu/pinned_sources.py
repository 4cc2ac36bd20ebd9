#!/usr/bin/env python3
"""How fast the GPU copies from each kind of pinned host memory (runs on the GPU machine): memory from
cudaHostAlloc (what torch's pin_memory gives) against a /dev/shm file mapped and registered in place, plain and
read-only (what Torpor's host cache is). Prints GB/s of 4 GiB host-to-device copies."""
import ctypes
import mmap
import os
import time

import torch

size = 4 << 30
device = torch.empty(size, dtype=torch.uint8, device="cuda")


def rate(host, label):
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        started = time.perf_counter()
        device.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        best = max(best, size / 1e9 / (time.perf_counter() - started))
    print(f"{label:40} {best:6.2f} GB/s")


rate(torch.empty(size, dtype=torch.uint8).pin_memory(), "cudaHostAlloc (pin_memory)")
cudart = torch.cuda.cudart()
for flags, label in [(0, "/dev/shm mapping, registered"), (8, "/dev/shm mapping, registered read-only")]:
    path = "/dev/shm/torpor-pinned-sources.bin"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT)
    os.ftruncate(descriptor, size)
    mapping = mmap.mmap(descriptor, size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    host = torch.frombuffer(mapping, dtype=torch.uint8)
    host.fill_(1)
    address = host.data_ptr()
    assert int(cudart.cudaHostRegister(address, size, flags)) == 0, "cudaHostRegister failed"
    rate(host, label)
    cudart.cudaHostUnregister(address)
    del host
    mapping.close()
    os.close(descriptor)
    os.remove(path)
