"""Where files live: local paths and object-store URIs (s3://, gs://, abfs://, hdfs://, ...) behind one small
interface, `Location`, built on pyarrow's filesystems. Sources, the output folder, exports and evaluation all
read and write through it; nothing here knows what the files hold."""

from storage.location import Location, StorageError, is_uri, locate, read_bytes

__all__ = ["Location", "StorageError", "is_uri", "locate", "read_bytes"]
