package ingest

// aicommerce is being written (issue 4).
type aicommerce struct{ unimplemented }

func (aicommerce) Name() string { return "aicommerce" }
