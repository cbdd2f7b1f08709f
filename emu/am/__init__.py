"""The emulated AMD GPU seen through a PCI function (the AM path): the IP discovery table it carries in VRAM
(discovery.py), and the blocks the driver brings up itself."""
