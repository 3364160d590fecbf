package route

import (
	"testing"

	"github.com/inferensys/canaryd/internal/canarydtest"
	"github.com/inferensys/canaryd/internal/kafkatest"
)

func TestMain(m *testing.M) { kafkatest.Main(m, canarydtest.Cleanup) }
