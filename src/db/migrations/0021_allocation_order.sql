-- The coordinated allocation follows each tenant's own order (the points
-- order, and the lift of a facility's declared priorities under its cap), so a
-- family's explanation needs those terms beside the category and the date:
-- the points each choice had and whether a declared priority lifted it, and
-- the same for the last candidate each facility admitted. NULL in runs
-- stored before (their order was the categories alone).
ALTER TABLE allocation_results ADD COLUMN points_by_choice integer[];
ALTER TABLE allocation_results ADD COLUMN lifted_by_choice boolean[];
ALTER TABLE allocation_cutoffs ADD COLUMN last_points integer;
ALTER TABLE allocation_cutoffs ADD COLUMN last_lifted boolean;
