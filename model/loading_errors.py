"""The error every checkpoint problem raises: the message names the file and, where there is one, the key."""


class CheckpointError(ValueError):
    pass
