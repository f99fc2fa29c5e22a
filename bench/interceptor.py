from bench.runner import Figure, Run, Skip


def measure(run: Run) -> list[Figure]:
    raise Skip("todo")
