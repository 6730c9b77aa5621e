class SCLLMDSC:  # placeholder, replaced by the implementation
    pass
