"""Independent re-implementations of the reference behaviour (the authors' DeCLIP code, ProxyCLIP, CLIPSelf,
DINOv2, open_clip), each written from the reference files (cited with their commits in each module) by a
helper that had not seen declip_mm's implementation. The tests in the reference-marked tests assert that
declip_mm agrees with them on real inputs."""
