"""The ANS message: constriction's stack with keystream encryption and initial bits."""
