"""What RQ calls for every tracked job: claim its row (workers.system.runs), then run the function
workers.jobs names, with the instance this worker unlocked (kept apart from runs, which the intake
reaches through workers.jobs and which must not reach the unlocked keys)."""
from workers.system import context, runs


def run(name: str, *args):
    fn = runs.target(name)
    return runs.run_claimed(context.instance(), name, args[0], lambda: fn(*args))
