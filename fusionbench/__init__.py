"""fusionbench: registration and fusion benchmark for unaligned PAT/MRI images."""
__version__ = "0.1.0"
