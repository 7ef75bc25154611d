package ingest

// iimmpact is being written (issue 4).
type iimmpact struct{ unimplemented }

func (iimmpact) Name() string { return "iimmpact" }
