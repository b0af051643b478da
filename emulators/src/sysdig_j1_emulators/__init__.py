"""Emulators of the Sysdig Secure and JupiterOne APIs, held to their published shapes: what
`make run`, the tests and the benchmarks run the pipeline against. A development package of its
own, never installed into a production image; the provider never imports it."""
