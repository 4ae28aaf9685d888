# The C kernel (worker/_sha512.c), built at install time when a C compiler is present.

LANES: int  # chains rehash_lanes computes together
VECTOR: int  # 1 when this CPU runs the AVX-512 path

def rehash(digest: bytes, times: int) -> bytes: ...
def rehash_lanes(digests: bytes, times: int) -> bytes: ...
