"""AMD GPU firmware: find images (images.py), parse and validate their amdgpu_ucode headers (ucode.py), and pick
the set an IP-version combination needs (select.py). Nothing here downloads anything."""
from firmware.ucode import FirmwareError, FirmwareImage, FirmwareSetError, Section, parse

__all__ = ["FirmwareError", "FirmwareImage", "FirmwareSetError", "Section", "parse"]
