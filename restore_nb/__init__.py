"restore_nb: notebook-first, literate image restoration."
__version__ = "0.1.0"


def __getattr__(name):
    "`restore_nb.pretrained(name)`: the zoo's models, imported on first use (so `import restore_nb` stays light)."
    if name == 'pretrained':
        from .infer.zoo import pretrained
        return pretrained
    raise AttributeError(f"module 'restore_nb' has no attribute {name!r}")
