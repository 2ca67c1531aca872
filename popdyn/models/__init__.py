"""Model families: one module per family, each defining its overlaps, population
quantities, ODE right-hand side and simulator step.  The generic engines (integrate,
simulate, fixed points, compare) take any model."""
