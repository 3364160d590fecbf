package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicSpec is a topic canaryd needs, with the settings it creates it with.
type TopicSpec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
	Purpose    string
}

func ptr(s string) *string { return &s }

// Topics returns the specs of canaryd's topics. The control topic is
// compacted (routers read the latest command per rollout, and the history
// of a rollout is short); the DLQ keeps 7 days and accepts records as large
// as the events topic's.
func Topics(events, control, dlq string, partitions int32) []TopicSpec {
	return []TopicSpec{
		{Name: events, Partitions: partitions, Purpose: "agent events in (key = rollout)",
			Configs: map[string]*string{"max.message.bytes": ptr("4194304")}},
		{Name: control, Partitions: 1, Purpose: "control commands out (key = rollout)",
			Configs: map[string]*string{"cleanup.policy": ptr("compact"), "min.compaction.lag.ms": ptr("3600000")}},
		{Name: dlq, Partitions: 1, Purpose: "malformed events with their reason",
			Configs: map[string]*string{"retention.ms": ptr("604800000"), "max.message.bytes": ptr("4194304")}},
	}
}

// EnsureTopics creates the topics that do not exist. When the broker refuses
// (no permission), the error says exactly what to create.
func EnsureTopics(ctx context.Context, cl *kgo.Client, specs []TopicSpec) error {
	adm := kadm.NewClient(cl)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	md, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	var errs []error
	for _, s := range specs {
		if d, ok := md[s.Name]; ok && d.Err == nil {
			continue
		}
		resp, err := adm.CreateTopic(ctx, s.Partitions, -1, s.Configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s (%s): %w; create it yourself: kafka-topics.sh --create --topic %s --partitions %d%s",
				s.Name, s.Purpose, err, s.Name, s.Partitions, configFlags(s.Configs)))
		}
	}
	return errors.Join(errs...)
}

func configFlags(c map[string]*string) string {
	var b strings.Builder
	for k, v := range c {
		fmt.Fprintf(&b, " --config %s=%s", k, *v)
	}
	return b.String()
}

// endOffsets returns each partition's end offset of topic.
func endOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	var errs []error
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			errs = append(errs, o.Err)
			return
		}
		out[o.Partition] = o.Offset
	})
	return out, errors.Join(errs...)
}
