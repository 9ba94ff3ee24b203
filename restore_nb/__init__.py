"restore_nb: notebook-first, literate image restoration."
__version__ = "0.1.0"
