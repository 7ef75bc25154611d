package ingest

// tipser is being written (issue 4).
type tipser struct{ unimplemented }

func newTipser(Deps) Provider { return tipser{} }

func (tipser) Name() string { return "tipser" }
