"""The emulated AMD GPU seen through a PCI function (the AM path): the card on the emulated PCI bus (gpu.py:
`install_am_gpu`, its BARs, boot and reset), its register file over BAR5 (regs.py: modelled registers by name, any
other access an error naming the register), and the IP discovery table it carries in VRAM (discovery.py). The IP
blocks the driver brings up itself (PSP, SMU, GMC, IH, GFX, SDMA) are modelled next."""
