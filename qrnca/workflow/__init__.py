"""How the workflow runs a job and records it: the job wrapper, the params a script
reads, the config keys each rule uses, the library files it runs, provenance."""
