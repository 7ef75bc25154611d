package ingest

// datasembly is being written (issue 4).
type datasembly struct{ unimplemented }

func (datasembly) Name() string { return "datasembly" }
