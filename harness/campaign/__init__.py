"""Reader-level accuracy and presentation-attack campaigns (ISO/IEC 19795-2, 30107-3): plan, run, metrics, compare."""
