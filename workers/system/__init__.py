"""Running the system: queues, the worker's instance, schedules, health, housekeeping."""
