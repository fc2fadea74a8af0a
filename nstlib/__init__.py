"""nstlib: the library behind the neural style transfer course."""

__version__ = "0.1.0"
