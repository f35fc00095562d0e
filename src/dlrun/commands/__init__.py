"""The commands beside dlrun: dlrun-rerun, dlrun-eval and dlrun-gradcheck."""
