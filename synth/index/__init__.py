"""Per-shard indexes of sharded sources: built by the cluster, one file per data shard.

A source stored as many tars (SA-1B: about 1,000 of about 11k images each) cannot be indexed on
the driver as one file. Here each tar gets its own compact index (member offsets, image sizes,
per-mask box, area and scores; no masks), written to a cache by one cluster task per tar and
reused while the tar is unchanged. The driver keeps per-tar counts only; a worker loads the
index of a tar when a shard first reads from it.

- ``tar_members``: a tar's members by byte offset, truncation detected, nothing extracted.
- ``tar_index``: the per-tar index of SA-1B-format pairs, its file format and its problems.
- ``select``: which indexed masks a source uses (filters, the per-image cap).
- ``cache``: tar identities (size + mtime or ETag), cache paths and atomic publication.
- ``tarset``: a source's tars, their per-tar counts and the index tasks that produce them.
- ``groups``: the images with usable masks, as sampling asks about them, known per tar.
- ``cluster``: running those tasks on the build's Dask client before the shard tasks.
"""
