//! AF_XDP ports: UMEM, rings, XDP program attachment and frame batches.
