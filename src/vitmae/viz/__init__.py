from .reconstruction import Reconstruction, reconstruct, reconstruction_grid, save_reconstruction_grid

__all__ = ["Reconstruction", "reconstruct", "reconstruction_grid", "save_reconstruction_grid"]
