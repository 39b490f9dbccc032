"""Paper tables as code: a spec names rows, columns, seeds and published values;
the runs it needs are found by run id, aggregated over seeds and rendered."""
