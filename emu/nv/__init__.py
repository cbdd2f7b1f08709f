"""Emulated NVIDIA GPUs: the RM and UVM kernel interfaces (rm.py, uvm.py, memory.py) and the GPU itself
(gpu.py, vaspace.py, pfifo.py, engines.py)."""
