"""AM: AMD GPUs driven with no kernel driver, over the PCI device interface. One file per IP block; discovery.py reads
the IP discovery table the card carries in VRAM, and every later choice (register sets, firmware) follows from it."""
