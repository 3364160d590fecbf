package stream

import "github.com/inferensys/canaryd/schemas"

// Decoder turns one Kafka record's value into events. Each partition has its
// own Decoder, used by one goroutine.
type Decoder interface {
	// Decode calls emit for every event in value; the event and its byte
	// slices are valid only during the call. When value is malformed it
	// returns an error — the record goes to the dead-letter topic with that
	// reason — and should emit nothing.
	Decode(value []byte, emit func(*schemas.Event)) error
}

// NewDecoder makes a partition's Decoder.
type NewDecoder func() Decoder

// JSONDecoder returns a decoder of canaryd's own JSON events (agent event
// v1, one per record), allocation-free after warm-up.
func JSONDecoder() Decoder { return &jsonDecoder{} }

type jsonDecoder struct {
	dec schemas.Decoder
	ev  schemas.Event
}

func (d *jsonDecoder) Decode(value []byte, emit func(*schemas.Event)) error {
	if err := d.dec.Decode(value, &d.ev); err != nil {
		return err
	}
	emit(&d.ev)
	return nil
}

// Stateful is a Decoder whose output depends on records before the current
// one (session assembly remembers a trace's spans until its root arrives).
// A checkpoint holds the window state, not the decoder's: on recovery the
// consumer replays from the oldest record the decoder still held, feeding
// those records before the checkpoint's offset to the decoder only, their
// events dropped (they were counted before).
type Stateful interface {
	Decoder
	// SetOffset tells the decoder the Kafka offset of the record it is
	// about to decode.
	SetOffset(off int64)
	// OldestHeld returns the offset of the oldest record whose data the
	// decoder still holds, or -1.
	OldestHeld() int64
}
