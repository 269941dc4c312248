"""What people read of a run: the candidate table and summary in the terminal, the JSON summary, the gate report,
the model card, plots, and the search's and the KD bench's own tables; and the configuration reference. Pure
formatting of typed results: nothing here trains, measures or tracks."""
