"""Cohorts on Dask workers (``m3dnca segment --cluster``, the optional extra ``m3dnca[cluster]``):
``spec`` parses the option without Dask, ``connect`` starts or joins the cluster, ``worker`` is
what runs there, ``run`` sends the cases and gathers them, ``progress`` shows the cohort."""
