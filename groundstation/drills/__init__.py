"""Training drills: scenarios, the runner that flies them, the offline check, the debrief
and its timeline picture. Drills fly the simulators, so this package may import them."""
